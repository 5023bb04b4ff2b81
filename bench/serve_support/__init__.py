"""What `make bench-serve` hands to the servers it compares: the bare floor app, the TorchServe handler, wrk.lua."""
