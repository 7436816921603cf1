"""A Warren node: configuration, sessions, effect dispatch and the `warren` command."""
