"""The subcommands of `xrtc`, one class per module (see cli.REGISTRY). Modules import heavy SDKs lazily, inside
`run`, so `xrtc --help` stays fast and works without them."""
