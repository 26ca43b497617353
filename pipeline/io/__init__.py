"""Floor 2, images and storage: what the job model and the fan-out read and write.

`images` (decode, encode), `formats`, `inputs` (an input image by reference), `identities` (the
`demo:` and `coco-val2017:` schemes), `mask_files`, `demo` (the embedded demo), `storage` (local
paths and `s3://` alike) over `s3` (boto3), `results` (a job's output folder) with `schema`,
`parts` (with `part_limits`: what a viewer decodes of one), `dedupe`, `compaction`, `lock`,
`quality` and `progress` (a job's, from its output), and `extras` (which optional extra a front
end needs). Imports only `pipeline.core` below it."""
