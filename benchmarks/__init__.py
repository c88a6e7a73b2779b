"""`make bench`: performance figures, each printed as
`bench NAME VALUE UNIT target OP LIMIT pass|FAIL`."""
