// The Data module.
