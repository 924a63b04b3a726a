"""`styleship batch`: stylize a dataset on Ray, resumably, with a results table.

`job.run_batch` plans the work and keeps the table (`table.py`, no Ray);
`ray_run.run_on_ray` runs what is left on a pool of actors, each holding one
`Stylizer` (`worker.py`). Ray is the optional `[ray]` extra and is imported
only when there is work to run, so this package imports without it.
"""
