"""Floor 2, images and storage: what the job model and the fan-out read and write.

Decoding and encoding images, mask files, the image formats and input references, one storage
layer for local paths and `s3://`, a job's results table and its lock, the embedded demo, and
which optional extra each front end needs. Imports only `pipeline.core` below it."""
