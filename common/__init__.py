"""What several parts of the package share and nothing else defines: defaults, file I/O and
work spread over processes."""
