"""define: what a batch is. The --models spec, task params, netrain.yaml, the configuration
function's contract, loading and probing the user's script, the batch manifest and its
builder (`generate`, `add`), the scripts' text, the code snapshot with its provenance, and
the checkpoint format. Imports only track/ (the builder creates the batch's experiment)."""
