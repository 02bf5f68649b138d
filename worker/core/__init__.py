"""Pure core: normalise, fingerprint, extract, cluster. Plain data in and out, no I/O."""
