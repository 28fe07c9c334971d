"""What several parts of the package share and nothing else defines: defaults, file I/O, the
reading of table cells and work spread over processes."""
