# Helpers shared by all rules (params validation; rule fields built from sibnet.dag).
# sibnet's own template filling is dag.expand, so Snakemake's expand() stays usable in rules.
import json
import os
import time
from pathlib import Path

import sibnet
from sibnet.config import ParamsError, load_params, lookup
from sibnet import dag
from sibnet.dag import MODELS, RESULTS, STAGES, command, stage
from sibnet.invocation import ENV_ENGINE, ENV_ID, invocation_id
from sibnet.extensions import load_extensions

load_extensions()  # stages of installed extensions get their rules (sibnet.extensions)


# (overwrite_config also holds the --configfile contents; config holds only --config pairs)
if workflow.config_settings.config:
    raise WorkflowError(
        "sibnet stages read their params file, so `--config key=value` overrides would not "
        "reach them: put the values in a params file and pass it with --configfile."
    )
PARAMS_FILE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"
try:
    PARAMS = load_params(PARAMS_FILE)
except ParamsError as error:
    raise WorkflowError(str(error))
DATASET = PARAMS.prepare.dataset

# Each job depends on the package files its stage can run (Stage.code, computed from the sibnet
# that Snakemake imports): they must be this repository's, or edits here would go unseen.
_ABSENT_CODE = sorted({p for s in STAGES.values() for p in s.code if not Path(p).is_file()})
if _ABSENT_CODE:
    raise WorkflowError(
        f"{_ABSENT_CODE[0]} (and {len(_ABSENT_CODE) - 1} more) is missing here, though the "
        f"installed sibnet ({Path(sibnet.__file__).parent}) runs it: install this repository's "
        "package (pip install -e .) so the jobs' code dependencies are the files they run"
    )

# One id per `snakemake` run, for every job's MLflow run and lineage record (sibnet.invocation);
# jobs on a cluster inherit it with the submitting environment, so it is set only once.
if ENV_ID not in os.environ:
    os.environ[ENV_ID] = invocation_id("snakemake", os.getpid(), time.time())
    os.environ[ENV_ENGINE] = "snakemake"

# Conda environment of each job under `snakemake --sdm conda` (envs/sibnet-<cpu|cuda>.yaml).
CONDA_ENV = "../../envs/sibnet-{}.yaml".format(os.environ.get("SIBNET_CONDA_ENV", "cpu"))


def _lookup(key):
    """Value of a dotted params key, e.g. 'methods.baseline'."""
    return lookup(PARAMS, key)


def _fill(template, wildcards):
    return dag.expand(template, dataset=DATASET, **{k: str(v) for k, v in wildcards.items()})


def stage_inputs(name):
    """Named inputs of a stage, plus the package files it can run (``Stage.code``: the import
    closure of its module, so an edit re-runs only the stages that can execute it).

    A gathering stage (the report) reads folders; Snakemake gets the files it reads in them
    instead: every output of the gathered stages for every method and seed.
    """
    spec = stage(name)
    if spec.gathers:
        direct = {
            k: dag.expand(t, dataset=DATASET)
            for k, t in spec.inputs.items()
            if t not in (RESULTS, MODELS)  # the gathered folders: their files are listed instead
        }
        gathered = list(dict.fromkeys(path for g in spec.gathered for path in run_outputs(g)))
        return {"gathered": gathered, **direct, "code": list(spec.code)}
    return {
        **{k: (lambda w, t=t: _fill(t, w)) for k, t in spec.inputs.items()},
        "code": list(spec.code),
    }


def stage_outputs(name):
    spec = stage(name)
    return {
        k: directory(dag.expand(t, dataset=DATASET)) if k in spec.directories else dag.expand(t, dataset=DATASET)
        for k, t in spec.outputs.items()
    }


def stage_log(name):
    return dag.expand(stage(name).log, dataset=DATASET)


def stage_params(name):
    """JSON of the params keys a stage reads: a change re-runs it (Snakemake's params trigger)."""
    spec = stage(name)
    return lambda w: json.dumps({k: _lookup(_fill(k, w)) for k in spec.params}, sort_keys=True)


def _processes(spec):
    """Data-parallel processes of a stage (train.processes for train, else 1)."""
    return _lookup(spec.processes_key) if spec.processes_key else 1


def stage_threads(name):
    """CPUs of a job: the stage's threads per process × its processes."""
    spec = stage(name)
    threads = _lookup(spec.threads_key) if spec.threads_key else 1
    return threads * _processes(spec)


def stage_resources(name):
    """Cluster resources of a job; gpu: one per data-parallel process where the stage uses GPUs."""
    spec = stage(name)
    return {"mem_mb": spec.mem_mb, "runtime": spec.runtime, "gpu": spec.gpu * _processes(spec)}


def stage_command(name):
    """The job's `sibnet` command line, as a params function of the job's wildcards, inputs and
    outputs (a rule made in a loop cannot build it in its shell string, which Snakemake
    evaluates when the job runs, after the loop has moved on)."""
    spec = stage(name)

    def command_line(wildcards, input, output):
        if spec.gathers:  # folder inputs, passed as literal paths
            inputs = {k: dag.expand(t, dataset=DATASET) for k, t in spec.inputs.items()}
        else:
            inputs = {k: input[k] for k in spec.inputs}
        paths = inputs | {k: output[k] for k in spec.outputs}
        method, seed = getattr(wildcards, "method", ""), getattr(wildcards, "seed", "")
        return command(spec, paths, params_file=PARAMS_FILE, method=method, seed=seed)

    return command_line


def run_outputs(name):
    """Every output of a stage, over pipeline.methods × pipeline.seeds where it is per method."""
    spec = stage(name)
    return [
        dag.expand(t, dataset=DATASET, method=m, seed=str(s))
        for m in PARAMS.pipeline.methods
        for s in PARAMS.pipeline.seeds
        for t in spec.outputs.values()
    ]


def final_outputs():
    """Targets of the default target (all): the outputs of every stage that no other stage
    gathers (the lineage audit, which gathers every other stage), so everything is built."""
    gathered = {g for spec in STAGES.values() for g in spec.gathered}
    return [path for name in STAGES if name not in gathered for path in run_outputs(name)]
