"""What the node knows across stores: its role (the role state machine), rate buckets, memory
accounting, tombstones, the name registry, ID minting, request statistics, and the live reload of
the settings that can change."""
