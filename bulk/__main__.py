"""`python -m bulk score INPUT OUTPUT ...` (bulk/cli.py) and `python -m bulk run-job JOB_ID`
(bulk/job.py, what the service submits as a Ray job)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["run-job"]:  # a job of the service (bulk/job.py)
        from bulk.job import main as run_job

        run_job(sys.argv[2:])
    else:
        from bulk.cli import main

        main()
