"""results: what happened. The networks read from a batch's own files, `show`'s table,
`report`, `best`, `describe` and the run-id lookup. Reads only; imports execute/, define/
and track/ (never train/)."""
