"""The `procorch` command line.

`app` is the Typer application (one module per group of commands registers its own);
`fast` answers the hottest commands (`status`, `down`) without importing Typer or Rich,
and hands every other run to `app`. `common` holds what the commands share.
"""
