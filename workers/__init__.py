"""Domain workers: one subpackage per domain (see ``shared.domains``). Importing a subpackage
registers that domain's built-in functions in ``shared.functions.BUILTINS``."""
