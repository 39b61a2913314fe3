"""Subcommands of the ``glmv`` CLI; see glmv/cli.py for the contract each module follows."""
