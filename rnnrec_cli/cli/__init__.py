"""The `rnnrec` command line: options, commands and what people see."""
