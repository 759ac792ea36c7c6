// The Collectives module.
