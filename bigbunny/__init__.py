"""Big Bunny (bbd): shared core — config, store IDs, wire codec, errors, client and CLI."""
