"""train: inside a task process. The task runner (train.task) and who the task is
(train.identity: its arguments, environment, run key and tags), how it stops early
(train.stops: signals, failed writes), the sequential trainer, the
packed trainer, weights files, and the child side of the configuration probe. The only
stage that imports Keras. Imports execute/, define/ and track/."""
