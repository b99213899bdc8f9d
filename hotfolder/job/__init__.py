"""One job's way from the inbox to done/ or failed/, one module per stage, in this order:

    watch       notice a file in an inbox (inotify, or polling on shares)
    ready       decide it has fully arrived (nobody writing, or quiet long enough)
    claim       rename it into processing/ atomically, tied to the inode that was judged
    intake      read the claimed file once, from one descriptor (jobfolder: a dropped folder)
    parse       turn its bytes into a JobSpec (prompt, fields, workflow, images; loaders
                reads its JSON or YAML)
    batchspec   ... or into the runs of a batch (count, prompts, matrix, CSV, JSONL)
    companions  take the images a job names along with it (imagefiles checks them)
    prepare     patch the template (or the job's own workflow) into the prompt to send
    submit      send it to a server (images: the uploads), follow it to its history entry
    deliver     download the outputs into the outbox, never a half-written file
    finish      move the job to done/ (with its sidecar) or failed/ (with its error file),
                its webhook events queued first (events)

`pipeline` runs these stages for one job and decides, in one place, "fail the job" or "try
again later"; `batchrun` runs a batch's runs through the same stage functions, over the same
`context`. `state` holds what is recorded about a job (and a run) so a restart resumes it;
`naming`, `crashguard` and `prune` serve the stages.
"""
