"""Not tests: what the tests share (doubles, loopback servers and cameras, model builders, media, browser harness)."""
