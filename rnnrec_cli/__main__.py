from rnnrec_cli.cli import main

main()
