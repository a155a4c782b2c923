"""The ``popinfer`` command line: thin click commands over the library API."""

from __future__ import annotations

import functools
import io
import os
import re
import shlex
import signal
import sys
import traceback
import warnings

import click

from . import __version__
from .errors import PopinferError, Terminated, UsageError
from .escaping import printable
from .mcmc import ConvergenceWarning, InterimEdgeWarning
from .reweighting import PopulationDiagnosticWarning, fit_population
from .io.hdf5 import no_space_left
from .plot import MAX_DPI
from .seeds import MAX_SEED

EXIT_DIAGNOSTIC = 3
DIAGNOSTIC_WARNINGS = (ConvergenceWarning, PopulationDiagnosticWarning, InterimEdgeWarning)
# Options that change how a run executes but never its results; they are left
# out of the recorded command so that the file is identical whatever they are.
RUN_CONTROL = {"workers", "resume", "quiet", "overwrite", "debug", "strict", "shard", "scheduler"}
SEED = click.IntRange(0, MAX_SEED)


def run_options(function):
    """Options shared by the commands that run inference."""
    for decorator in reversed([
        click.option("--seed", type=SEED, default=None,
                     help=f"Seed of all randomness, 0 to {MAX_SEED} (recorded in the file)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output file."),
        click.option("--strict", is_flag=True, help="Exit with status 3 if a diagnostic warning fires."),
        click.option("--debug", is_flag=True, help="Show the Python traceback of a failure."),
    ]):
        function = decorator(function)
    return function


def _recorded_command(ctx):
    """The invocation in canonical form, without run-control options."""
    words = ["popinfer", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in RUN_CONTROL or value is None or value == () or value is False:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if value is True:
            words.append(flag)
        else:
            for item in value if isinstance(value, tuple) else (value,):
                words.extend([flag, str(item)])
    return shlex.join(words)


CHECKPOINTING = ("fit_individuals_command", "refine_command")  # they keep OUTPUT.partial to --resume


def _resume_hint(command, output):
    """What an interrupted command leaves behind and how to go on."""
    if command == "fit_individuals_command" and output and output != "-":
        if os.path.exists(f"{output}.partial"):
            return (f"Finished batches are kept in {output}.partial; run the same command with --resume to "
                    f"continue.")
        return "No batch had finished; run the command again."
    if command == "refine_command" and output and output != "-":
        if os.path.isdir(f"{output}.partial"):
            return (f"Finished refits are kept in {output}.partial; run the same command with --resume to "
                    f"continue.")
        return "No refit had finished; run the command again."
    if command == "fit_population_command":
        return ("fit-population keeps no partial state (nothing was written); run the command again to "
                "restart it.")
    return ""


def _with_leftover(message, command, output):
    """A failure's message, with how to go on from the checkpoint the run leaves (a failure after
    some batches or refits finished), unless the message is about that checkpoint already. Only
    the commands that keep one; a usage error (refused before any work) gets none."""
    partial = f"{output}.partial"
    if (command not in CHECKPOINTING or not output or output == "-" or not os.path.exists(partial)
            or partial in message):
        return message
    hint = _resume_hint(command, output)
    return f"{message} {hint}" if hint else message


def _silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's last flush finds no closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # not a real file (tests)
        pass


def _failure_message(exc, command, output):
    """The one paragraph for an exception that is not a popinfer error."""
    if no_space_left(exc):  # an ordinary runtime failure, whatever layer noticed it
        where = "stdout" if output == "-" else (output or "the output")
        reason = re.search(r"error message = '([^']*)'", str(exc))
        reason = reason.group(1) if reason else getattr(exc, "strerror", None) or str(exc)
        return (f"Writing {where} failed: {reason}. The disk, a quota or a file size limit is "
                f"full. {_resume_hint(command, output) or 'Nothing was written.'} Free some space, or write "
                f"elsewhere, and rerun.")
    return (f"Unexpected {type(exc).__name__}: {exc}. Rerun with --debug for the traceback, and report it if "
            f"the input looks valid.")


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so that every cleanup of temporary files runs."""
    raise Terminated()


def handle_errors(function):
    """Library exceptions to exit statuses; warnings to stderr; --strict to 3."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            _run(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(*args, **kwargs):
        debug = kwargs.get("debug", False)
        strict = kwargs.get("strict", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                function(*args, **kwargs)
            except UsageError as exc:
                if debug:
                    traceback.print_exc()
                raise click.UsageError(printable(str(exc))) from None
            except PopinferError as exc:
                if debug:
                    traceback.print_exc()
                raise click.ClickException(printable(_with_leftover(str(exc), function.__name__,
                                                                    kwargs.get("output")))) from None
            except KeyboardInterrupt as exc:
                what = "Terminated (SIGTERM)" if isinstance(exc, Terminated) else "Interrupted"
                click.echo(printable(f"{what}. {_resume_hint(function.__name__, kwargs.get('output'))}"), err=True)
                sys.exit(1)
            except click.exceptions.Exit:
                raise
            except BrokenPipeError:  # the reader of stdout stopped early (`| head`): not a failure
                _silence_stdout()
                sys.exit(0)
            except Exception as exc:  # a full disk, or an unexpected failure: one paragraph, traceback on --debug
                if debug:
                    raise
                raise click.ClickException(printable(
                    _failure_message(exc, function.__name__, kwargs.get("output")))) from None
            finally:
                for item in caught:
                    if not issubclass(item.category, DeprecationWarning):
                        click.echo(printable(f"Warning: {item.message}"), err=True)
        if strict and any(issubclass(item.category, DIAGNOSTIC_WARNINGS) for item in caught):
            sys.exit(EXIT_DIAGNOSTIC)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="popinfer")
def main():
    """Hierarchical Bayesian inference by two-stage importance sampling.

    Stage one (fit-individuals) fits every object under a broad interim prior
    and keeps K posterior draws per object in an HDF5 file; stage two
    (fit-population) reweights them under a population density and samples
    its hyperparameters; summary and inspect describe both kinds of file.

    \b
    Example:
        popinfer fit-individuals sample_data/eight_schools.csv -o eight.h5 --model normal --seed 1
        popinfer fit-population eight.h5 -o eight-pop.h5 --population normal --seed 2
        popinfer summary eight-pop.h5
    """


@main.command("fit-individuals")
@click.argument("data", type=str)
@click.option("-o", "--output", required=True, help="Samples file to write (- for stdout).")
@click.option("--model", required=True, help="normal, binomial, poisson, linear, or file.py:function / module:function.")
@click.option("--prior", "priors", multiple=True, metavar="NAME=DIST", help="Interim prior of one parameter (repeatable).")
@click.option("--fix", "fixed", multiple=True, metavar="NAME=VALUE", help="Hold a model parameter fixed (repeatable).")
@click.option("--column", "columns", multiple=True, metavar="ROLE=NAME", help="Column name for a model role (repeatable).")
@click.option("--id-column", default=None, help="Object id column [default: the first column].")
@click.option("--samples", "n_draws", type=int, default=4000, show_default=True, help="Posterior draws kept per object (K).")
@click.option("--walkers", "n_walkers", type=int, default=None,
              help="emcee walkers per object [default: max(32, 2D+2, K/25), rounded up to even].")
@click.option("--max-steps", type=int, default=20000, show_default=True,
              help="Cap on steps; an object stops earlier once its chain is >= 50 autocorrelation times long and "
                   "its kept half holds K effectively independent draws (steps x W / (2 tau) >= K).")
@click.option("--batch-size", type=int, default=None, help="Objects sampled together [default: from a memory budget].")
@click.option("--workers", type=int, default=1, show_default=True, help="Local processes (results do not depend on it).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same output.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run batches on Dask: tcp://HOST:PORT, or local:N for a local cluster of N processes.")
@click.option("--shard", default=None, metavar="I/N",
              help="Fit only the I-th (1-based) of N deterministic slices into its own file; join with merge.")
@run_options
@handle_errors
def fit_individuals_command(data, output, model, priors, fixed, columns, id_column, n_draws, n_walkers, max_steps,
                            batch_size, workers, resume, scheduler, shard, seed, quiet, overwrite, strict, debug):
    """Fit every object on its own under the interim prior (stage one).

    DATA is a CSV/TSV table (- reads CSV from stdin), one row per measurement;
    an object may have one row or many.

    \b
    Example:
        popinfer fit-individuals sample_data/eight_schools.csv -o eight.h5 \\
            --model normal --prior "theta=uniform(-100, 100)" --seed 1
        popinfer fit-individuals sample_data/mn_radon.csv -o radon.h5 --model normal \\
            --id-column county --column y=log_radon --seed 2
    """
    from .individuals import fit_individuals

    fit_individuals(
        data, model, output, priors=list(priors), fixed=list(fixed), columns=list(columns), id_column=id_column,
        n_draws=n_draws, n_walkers=n_walkers, max_steps=max_steps, workers=workers, seed=seed,
        batch_size=batch_size, resume=resume, overwrite=overwrite, progress=not quiet,
        command=_recorded_command(click.get_current_context()), shard=_parse_shard(shard), scheduler=scheduler,
    )


def _parse_shard(text):
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 3/10.", "--shard") from None


@main.command("merge")
@click.argument("shards", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Samples file to write (- for stdout).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def merge_command(shards, output, overwrite, debug):
    """Join the shard files of a --shard I/N run (fit-individuals or refine) into one samples file.

    Checks that the shards belong together (same data, model, priors, settings
    and seed) and that none is missing or given twice; the result is the file
    an unsharded run writes.

    \b
    Example:
        popinfer merge shards/part-*.h5 -o samples.h5
    """
    from .io.hdf5 import check_output
    from .io.samples import merge_shards

    check_output(output, overwrite, inputs=shards)
    merge_shards(shards, output, overwrite)


@main.command("fit-population")
@click.argument("samples", type=str)
@click.option("-o", "--output", required=True, help="Population file to write (- for stdout).")
@click.option("--population", required=True,
              help="normal, truncnormal, lognormal, beta, gamma, powerlaw, uniform, studentt, mixture, mvnormal, "
                   "or file.py:function / module:function.")
@click.option("--parameter", "parameters", multiple=True, metavar="NAME",
              help="Stage-one parameter the population describes (repeatable) [default: the only one].")
@click.option("--hyperprior", "hyperpriors", multiple=True, metavar="NAME=DIST", help="Prior of one hyperparameter (repeatable).")
@click.option("--fix", "fixed", multiple=True, metavar="NAME=VALUE", help="Hold a hyperparameter fixed (repeatable).")
@click.option("--min-ess", type=float, default=20.0, show_default=True, help="Per-object ESS below which a warning fires.")
@click.option("--max-variance", type=float, default=None, help="Hyperparameters with Var[ln L] above this get ln L = -inf.")
@click.option("--sampler", default="emcee", show_default=True, metavar="NAME",
              help="Sampler of the hyperparameters: emcee, nuts (nutpie's NUTS on gradients of ln L, the nuts "
                   "extra), or nested (UltraNest, the nested extra; also computes the evidence ln Z); samplers are "
                   "registered in popinfer.reweighting.samplers.")
@click.option("--live-points", type=int, default=None,
              help="--sampler nested: minimum number of live points [default: 400].")
@click.option("--chains", type=int, default=None, help="--sampler nuts: independent chains [default: 4].")
@click.option("--tune", type=int, default=None, help="--sampler nuts: adaptation steps per chain [default: 400].")
@click.option("--tune-thin", type=int, default=None, metavar="N",
              help="--sampler nuts: the adaptation steps use every N-th stage-one draw of each object (the kept "
                   "draws use all) [default: 4; 1: all].")
@click.option("--backend", type=click.Choice(["numpy", "jax", "auto"]), default=None,
              help="Kernel of ln L: numpy, jax (the jax extra: jitted, on a GPU when jax has one, gradients of "
                   "jax.numpy populations by autodiff), or auto (jax with --sampler emcee or nested and a built-in population "
                   "other than mvnormal, where it is installed and this CPU lacks AVX-512, on which numpy's exp "
                   "is scalar; else numpy) "
                   "[default: $POPINFER_BACKEND if set, else numpy].")
@click.option("--exp-precision", type=click.Choice(["double", "single"]), default="double", show_default=True,
              help="The numpy kernel's exponentials of the weights: double (float64) or single (float32, with every "
                   "sum in float64: each object's ln L term moves by ~1e-8, and the kernel runs 1.6-1.9 times as fast "
                   "on CPUs without AVX-512).")
@click.option("--walkers", "n_walkers", type=int, default=None, help="--sampler emcee: walkers [default: 32].")
@click.option("--moves", default=None, metavar="stretch|de",
              help="--sampler emcee: its proposals, the stretch move (stretch) or differential evolution (de: "
                   "fewer evaluations, but a walker stranded in a tail can stay there) [default: stretch].")
@click.option("--max-steps", type=int, default=None,
              help="--sampler emcee: cap on steps; the run stops earlier once the chain is >= 50 autocorrelation "
                   "times [default: 20000].")
@click.option("--samples", "n_samples", type=int, default=4000, show_default=True, help="Hyperparameter draws kept.")
@click.option("--reweighted", "n_reweighted", type=int, default=1000, show_default=True,
              help="Draws per object under the inferred population.")
@click.option("--selection", default=None, metavar="INJECTIONS",
              help="Table (CSV/TSV/Parquet, or HDF5) of the survey's detected injections: corrects for selection.")
@click.option("--injections-total", type=int, default=None, metavar="M",
              help="Injections drawn in all, detected or not [default: the file's injections_total].")
@click.option("--draw-prior", "draw_priors", multiple=True, metavar="NAME=DIST",
              help="Distribution the injections were drawn from, per parameter (without a log_draw_prior column).")
@click.option("--injections-group", default=None, help="For HDF5 injections: the group holding one dataset per column.")
@click.option("--observing-time", type=float, default=None, metavar="T",
              help="Also draw the rate R ~ Gamma(N, xi(alpha) T) per hyperparameter draw.")
@run_options
@handle_errors
def fit_population_command(samples, output, population, parameters, hyperpriors, fixed, min_ess, max_variance,
                           sampler, live_points, chains, tune, tune_thin, backend, exp_precision, n_walkers, moves,
                           max_steps, n_samples, n_reweighted, selection, injections_total, draw_priors, injections_group, observing_time,
                           seed, quiet, overwrite, strict, debug):
    """Infer the population from stage-one draws (stage two).

    Reweights each object's draws by f(θ; α)/p0(θ) (Hogg, Myers & Bovy 2010),
    samples the hyperparameters α with emcee, warns (naming the objects) when
    the interim draws cannot support the population, and draws every object's
    parameters under the inferred population (partial pooling). SAMPLES is a
    samples file (- reads stdin). With --selection, the objects are those a
    survey detected, and its injections correct for what it missed.

    \b
    Example:
        popinfer fit-population eight.h5 -o eight-pop.h5 --population normal \\
            --hyperprior "mu=normal(0, 5)" --hyperprior "sigma=halfcauchy(5)" --seed 2
        popinfer fit-individuals sample_data/eight_schools.csv -o - --model normal --quiet \\
            | popinfer fit-population - -o pop.h5 --population normal
        popinfer fit-population survey.h5 -o survey-pop.h5 --population normal \\
            --selection sample_data/survey_injections.csv --injections-total 60000 \\
            --draw-prior "theta=normal(0, 1.5)"
        popinfer fit-population eight.h5 -o eight-mixture.h5 --population mixture --sampler nested
        popinfer fit-population eight.h5 -o eight-nuts.h5 --population normal --sampler nuts --seed 2
    """
    fit_population(
        samples, population, output, parameters=list(parameters), hyperpriors=list(hyperpriors), fixed=list(fixed),
        min_ess=min_ess, max_variance=max_variance, n_walkers=n_walkers, max_steps=max_steps, n_samples=n_samples,
        n_reweighted=n_reweighted, seed=seed, overwrite=overwrite, progress=not quiet,
        command=_recorded_command(click.get_current_context()), selection=selection,
        injections_total=injections_total, draw_priors=list(draw_priors), injections_group=injections_group,
        observing_time=observing_time,
        sampler=sampler, live_points=live_points, chains=chains, tune=tune, tune_thin=tune_thin, backend=backend,
        moves=moves, exp_precision=exp_precision,
    )


@main.command("refine")
@click.argument("samples", type=str)
@click.argument("population", type=str)
@click.option("-o", "--output", required=True, help="Refined samples file to write (- for stdout).")
@click.option("--data", default=None, help="The stage-one data table, if it moved from the path SAMPLES records.")
@click.option("--selection", default=None, metavar="INJECTIONS",
              help="The injections POPULATION was fitted with (--selection), if they moved from the path it records.")
@click.option("--min-ess", type=float, default=None,
              help="ESS below which an object is flagged [default: the population fit's --min-ess].")
@click.option("--rounds", type=int, default=None,
              help="Rounds of flag, refit, fit the population again (in memory); stops once nothing is flagged "
                   "[default: 3; 1 with --shard].")
@click.option("--target-variance", type=float, default=0.5, show_default=True,
              help="Also refit the largest contributors while the median Var[ln L-hat] exceeds this; smaller values "
                   "buy a less noisy ln L-hat with more draws.")
@click.option("--moment-error", type=float, default=None,
              help="Also refit, with more draws, the largest contributors to stage one's Monte Carlo error of the "
                   "hyperparameters' posterior means while it exceeds this many posterior sds (e.g. 0.01) [default: off].")
@click.option("--workers", type=int, default=1, show_default=True, help="Local processes (results do not depend on it).")
@click.option("--batch-size", type=int, default=None, help="Objects refitted together [default: from a memory budget].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same output.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the refits on Dask: tcp://HOST:PORT, or local:N for a local cluster of N processes.")
@click.option("--shard", default=None, metavar="I/N",
              help="Refit only the I-th (1-based) of N deterministic slices into its own file (one round); join "
                   "with merge.")
@click.option("--trust-code", is_flag=True, help="Allow re-running a user model or population the files name.")
@run_options
@handle_errors
def refine_command(samples, population, output, data, selection, min_ess, rounds, target_variance, moment_error,
                   workers, batch_size, resume, scheduler, shard, trust_code, seed, quiet, overwrite, strict, debug):
    """Refit the objects a population fit flagged (low ESS, or a large share of
    Var[ln L̂]) under a population-informed interim prior, and keep the others.

    SAMPLES is the samples file POPULATION was fitted to. The output is a samples
    file (each object its own number of draws) for fit-population like any other.
    The data are read again from the path SAMPLES records (or --data), and the
    injections of a fit with selection effects from the path POPULATION records (or
    --selection); both must have the recorded SHA-256.

    With --shard I/N, each of N runs refits its share of the flagged objects (one
    round) into a shard file; popinfer merge joins them into the file an unsharded
    run writes.

    \b
    Example:
        popinfer refine eight.h5 eight-pop.h5 -o eight-refined.h5 --seed 3
        popinfer fit-population eight-refined.h5 -o eight-pop-refined.h5 --population normal \\
            --hyperprior "mu=normal(0, 5)" --hyperprior "sigma=halfcauchy(5)" --seed 4
    """
    from .refinement import refine
    from .reweighting import PopulationDiagnosticWarning

    result = refine(samples, population, output, data=data, selection=selection, seed=seed, min_ess=min_ess,
                    rounds=rounds, target_variance=target_variance, workers=workers, progress=not quiet,
                    overwrite=overwrite, trust_code=trust_code, command=_recorded_command(click.get_current_context()),
                    resume=resume, scheduler=scheduler, batch_size=batch_size, moment_error=moment_error,
                    shard=_parse_shard(shard))
    label = "-" if output == "-" else output
    if result.flagged_after and not result.shard:
        warnings.warn(PopulationDiagnosticWarning(result.report(label)))
    else:
        click.echo(printable(result.report(label)), err=True)


@main.command("summary")
@click.argument("file", type=str)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--table", type=click.Choice(["hyper", "objects"]), default=None,
              help="Population files: only the hyperparameter or the object table [csv default: hyper]. "
                   "Samples files: objects.")
@click.option("--formula-safe", is_flag=True,
              help="csv: prefix text cells starting with = + - @ with ' so spreadsheets never run them.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def summary_command(file, fmt, table, formula_safe, debug):
    """Summarise a samples or population file.

    For a samples file: per object and parameter, mean, sd, 5/50/95 %
    quantiles, autocorrelation time, steps, acceptance and the converged flag.
    For a population file: the hyperparameter posterior (mean, sd, 5/50/95 %,
    autocorrelation time), the diagnostics, and every object's independent
    (stage-one) next to its pooled estimate. csv is one table per call: the
    hyperparameters, or the objects with --table objects.

    \b
    Example:
        popinfer summary eight.h5
        popinfer summary eight.h5 --format json | jq '.[] | select(.converged | not)'
        popinfer summary eight-pop.h5 --format json | jq '.hyperparameters'
        popinfer summary eight-pop.h5 --format csv --table objects > objects.csv
    """
    from .summary import summarize_file

    text = summarize_file(file, fmt, table, formula_safe)
    # color=True: click would strip what looks like ANSI codes from ids when stdout is not a
    # terminal, corrupting csv; the table is escaped instead, and json escapes them itself.
    click.echo(printable(text) if fmt == "table" else text, nl=False, color=True)


@main.command("inspect")
@click.argument("file", type=str)
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def inspect_command(file, debug):
    """Describe a popinfer file: provenance attributes and datasets.

    \b
    Example:
        popinfer inspect eight.h5
    """
    from .summary import inspect_file

    click.echo(printable(inspect_file(file)), nl=False)


@main.command("plot")
@click.argument("file", type=str)
@click.option("-o", "--output", required=True, help="Figure file: .png, .pdf or .svg.")
@click.option("--kind", type=click.Choice(["population", "forest", "corner", "diagnostics", "predictive", "trace",
                                          "model"]), default=None,
              help="Population files: population (default), forest, corner, diagnostics, predictive. "
                   "Samples files: forest (default), trace. Both: model (the plate diagram).")
@click.option("--dpi", type=click.IntRange(1, MAX_DPI), default=110, show_default=True,
              help=f"Resolution of raster formats, dots per inch (1 to {MAX_DPI}).")
@click.option("--trust-code", is_flag=True,
              help="Import and run the user population the file names, to draw its density (only for files "
                   "you trust; without it the density of a user population is left out).")
@click.option("--overwrite", is_flag=True, help="Replace an existing figure.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def plot_command(file, output, kind, dpi, trust_code, overwrite, debug):
    """Draw a samples or population file (needs the plot extra: matplotlib).

    \b
    Example:
        popinfer plot eight-pop.h5 -o population.png
        popinfer plot eight-pop.h5 -o forest.svg --kind forest
        popinfer plot eight-pop.h5 -o diagnostics.pdf --kind diagnostics
        popinfer plot eight.h5 -o trace.png --kind trace
        popinfer plot eight-pop.h5 -o check.png --kind predictive
        popinfer plot eight-pop.h5 -o model.pdf --kind model
    """
    from .plot import plot_file

    plot_file(file, output, kind, dpi, trust_code, overwrite)


@main.command("compare")
@click.argument("files", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def compare_command(files, fmt, debug):
    """Rank population files fitted to one samples file.

    By elpd_loo (leave-one-object-out, PSIS, with Δ and its standard error),
    with ln Z ± error and ln Bayes factors where the file has an evidence
    (--sampler nested), the number of hyperparameters and the worst
    diagnostics (smallest ESS, largest Var[ln L], largest Pareto k). Files made
    from different samples files are refused. Needs ArviZ (the export extra).

    \b
    Example:
        popinfer compare normal.h5 studentt.h5 mixture.h5
        popinfer compare normal.h5 mixture.h5 --format json | jq '.[0].population'
    """
    from .comparison import compare_files

    click.echo(compare_files(list(files), fmt), nl=False)


@main.command("export")
@click.argument("file", type=str)
@click.option("-o", "--output", required=True, help="Output file (- for csv/json on stdout).")
@click.option("--to", "to", type=click.Choice(["csv", "parquet", "json", "netcdf"]), required=True,
              help="Format: tidy long tables (csv, parquet, json) or ArviZ InferenceData (netcdf).")
@click.option("--table", type=click.Choice(["draws", "hyper", "pooled"]), default=None,
              help="Samples files: draws. Population files: hyper (default) or pooled.")
@click.option("--formula-safe", is_flag=True,
              help="csv: prefix text cells starting with = + - @ with ' so spreadsheets never run them.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def export_command(file, output, to, table, formula_safe, overwrite, debug):
    """Export draws as tidy tables or an ArviZ-readable netCDF.

    \b
    Example:
        popinfer export eight.h5 -o draws.parquet --to parquet
        popinfer export eight-pop.h5 -o - --to csv | head
        popinfer export eight-pop.h5 -o pooled.json --to json --table pooled
        popinfer export eight-pop.h5 -o eight-pop.nc --to netcdf
        popinfer export eight.h5 -o draws.csv --to csv --formula-safe
    """
    from .export import export_file

    export_file(file, output, to, table, overwrite, formula_safe)


@main.command("import-samples")
@click.argument("data", type=str)
@click.option("-o", "--output", required=True, help="Samples file to write (- for stdout).")
@click.option("--id-column", default=None,
              help="Object id column [default: the first column; an HDF5 group's first dataset only where the group "
                   "records their creation order].")
@click.option("--parameter", "parameters", multiple=True, metavar="NAME",
              help="Parameter column (repeatable) [default: every column but the id and log_prior].")
@click.option("--prior", "priors", multiple=True, metavar="NAME=DIST",
              help="Interim prior the draws of one parameter were made under (repeatable).")
@click.option("--log-prior-column", default=None, help="Column with ln p0 of each draw [default: log_prior].")
@click.option("--samples", "n_draws", type=int, default=None,
              help="Draws kept per object, subsampling objects with more [default: every draw, each object its own "
                   "count].")
@click.option("--hdf5-group", default=None, help="For an HDF5 input: the group holding one dataset per column.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help=f"Seeds the subsampling of objects with extra draws, 0 to {MAX_SEED}.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@handle_errors
def import_samples_command(data, output, id_column, parameters, priors, log_prior_column, n_draws, hdf5_group, seed,
                           overwrite, debug):
    """Turn posterior draws made elsewhere into a samples file for stage two.

    DATA is a long table, one row per draw: object id, parameter columns, and a
    log_prior column or --prior for every parameter. Every object keeps all its
    draws (the file records each object's count); with --samples K, objects with
    more than K draws are subsampled (seeded) and fewer is an error.

    \b
    Example:
        popinfer import-samples sample_data/stan_draws.csv -o samples.h5 --id-column star \\
            --prior "ecc=uniform(0, 1)"
        popinfer import-samples draws.csv -o - | popinfer fit-population - -o pop.h5 --population beta
    """
    from .importing import import_samples

    import_samples(data, output, id_column=id_column, parameters=list(parameters), priors=list(priors),
                   log_prior_column=log_prior_column, n_draws=n_draws, seed=seed, hdf5_group=hdf5_group,
                   overwrite=overwrite, command=_recorded_command(click.get_current_context()))
