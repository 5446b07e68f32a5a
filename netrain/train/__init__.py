"""train: inside a task process. The task runner (train.task), the sequential trainer, the
packed trainer, weights files, and the child side of the configuration probe. The only
stage that imports Keras. Imports execute/, define/ and track/."""
