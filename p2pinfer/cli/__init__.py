"""The p2pinfer command line: parsing and output only."""
