"""The `dev_tools` domain worker's functions. Importing this package registers its built-ins."""
