"""Rebuild validation/REPORT.md from validation/results/*.json.

    python validation/sbc.py --replicates 200 --workers 2
    python validation/published.py
    python validation/failure_mode.py
    python validation/report.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PUBLISHED = [
    ("eight_schools", "E_mu", "E[mu]", "4.40", "posteriordb eight_schools_noncentered (Stan)"),
    ("eight_schools", "E_tau", "E[tau]", "3.60", "posteriordb eight_schools_noncentered (Stan)"),
    ("rats", "E_mean", "E[a/(a+b)]", "0.144", "BDA3 §5.3 (prior (a+b)^-5/2)"),
    ("rats", "E_a", "E[a]", "exact", "beta-binomial posterior by quadrature, same hyperprior"),
    ("rats", "E_b", "E[b]", "exact", "beta-binomial posterior by quadrature, same hyperprior"),
    ("rats", "E_log_concentration", "E[ln(a+b)]", "exact", "beta-binomial posterior by quadrature, same hyperprior"),
    ("baseball", "ratio", "MSE pooled / MSE raw", "≈ 0.3", "Efron & Morris (1975): pooled beats raw"),
    ("radon", "mu_a", "mu_a", "1.31", "Gelman & Hill ch. 12"),
    ("radon", "sigma_a", "sigma_a", "0.31", "Gelman & Hill ch. 12"),
    ("radon", "sigma_y", "sigma_y", "0.80", "Gelman & Hill ch. 12"),
]


def sbc_section():
    lines = ["## Simulation-based calibration", "",
             "Each replicate draws the hyperparameters from the hyperprior, simulates the objects and their data, "
             "runs both stages under that same hyperprior, and records the rank of the true value among 99 thinned "
             "posterior draws and whether the central 50 % and 90 % intervals cover it (Talts et al. 2018). "
             "Calibrated: uniform ranks (χ² test over 10 bins) and coverage inside the central 99.9 % binomial "
             "range.", ""]
    for path in sorted(RESULTS.glob("sbc_*.json")):
        data = json.loads(path.read_text())
        sampler = data.get("sampler", "emcee")
        lines += [f"### {data['case']}: {data['description']}" + ("" if sampler == "emcee" else f" (--sampler {sampler})"),
                  "",
                  f"{data['replicates']} replicates of {data['n_objects']} objects, K = {data['n_draws']} draws "
                  f"per object; population `{data['population']}` on `{data['parameter']}`, hyperpriors "
                  + ", ".join(f"`{k}={v}`" for k, v in data["hyperpriors"].items())
                  + "; interim priors " + ", ".join(f"`{p}`" for p in data["priors"])
                  + f". {data['seconds']:.0f} s on 2 workers; {data['warnings']} diagnostic warnings in all.", "",
                  "| hyperparameter | χ² p (ranks) | 50 % coverage (range) | 90 % coverage (range) | rank histogram |",
                  "|---|---|---|---|---|"]
        for name, s in data["summary"].items():
            lines.append(
                f"| {name} | {s['chi2_pvalue']:.3f} | {s['coverage50']:.3f} ({s['coverage50_range'][0]:.3f}–"
                f"{s['coverage50_range'][1]:.3f}) | {s['coverage90']:.3f} ({s['coverage90_range'][0]:.3f}–"
                f"{s['coverage90_range'][1]:.3f}) | {' '.join(map(str, s['rank_histogram']))} |")
        png = path.with_suffix(".png")
        if png.exists():
            lines += ["", f"![{data['case']} rank histograms](results/{png.name})"]
        lines.append("")
    return lines


def published_section():
    path = RESULTS / "published.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    exact = data.get("rats_exact", {})
    lines = ["## Published results", "",
             "Each example runs exactly as documented in `sample_data/EXAMPLES.md`; popinfer's value is the mean "
             "over seeds ± the seed-to-seed standard deviation (the Monte Carlo error of the whole pipeline, "
             "which the tests use as tolerance).", "",
             "| example | quantity | reference | popinfer | source of the reference |", "|---|---|---|---|---|"]
    for example, key, label, reference, source in PUBLISHED:
        if example not in data:
            continue
        if reference == "exact":
            reference = f"{exact[key]:.4g}"
        mean, sd, seeds = data[example]["mean"][key], data[example]["sd"][key], data[example]["seeds"]
        lines.append(f"| {example} | {label} | {reference} | {mean:.4g} ± {sd:.2g} ({seeds} seeds) | {source} |")
    lines += ["", "Seconds per run (both stages): " + ", ".join(
        f"{name} {data[name]['seconds_per_run']:.0f} s" for name in ("eight_schools", "rats", "baseball", "radon")
        if name in data) + ".", ""]
    if "baseball" in data:
        b = data["baseball"]["mean"]
        lines += [f"Efron–Morris: mean squared error against the rest-of-season averages, raw {b['mse_raw']:.5f}, "
                  f"partially pooled {b['mse_pooled']:.5f}.", ""]
    return lines


def failure_section():
    path = RESULTS / "failure_mode.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = ["## The interim-prior failure mode", "",
             "Eight schools under mu ~ Normal(0, 5), tau ~ HalfCauchy(5) (reference E[mu] = 4.40, E[tau] = 3.60).", "",
             "| scenario | E[mu] | E[tau] | support warning | ESS warning | median Var[ln L̂] |", "|---|---|---|---|---|---|"]
    for name, r in data.items():
        lines.append(f"| {name} | {r['E_mu']:.2f} | {r['E_tau']:.2f} | {'yes' if r['support_warning'] else 'no'} | "
                     f"{'yes' if r['ess_warning'] else 'no'} | {r['median_ln_likelihood_variance']:.3g} |")
    lines += ["", "The narrow interim prior biases E[tau] down (populations wider than the prior's support lose "
              "likelihood they should have) and the support warning fires; the wide prior removes the bias and that warning "
              "(the ESS warning left is the small-tau one of K = 4000, below). With "
              "K = 100 the ESS warning fires and Var[ln L̂] is large; K = 20000 brings it down a hundredfold. The "
              "ESS warning can still fire at K = 20000 for school A: the posterior of tau reaches 0, where any "
              "finite K runs out of effective draws, and about 1 % of the posterior draws lie there (the warning "
              "threshold). All single-seed estimates above carry the Monte Carlo error of the table above "
              "(sd ≈ 0.12).", ""]
    return lines


def main():
    lines = ["# Validation report", "",
             "Evidence that popinfer's two-stage pipeline is calibrated and reproduces published results. "
             "Regenerate everything with:", "", "    python validation/sbc.py --replicates 200 --workers 2",
             "    python validation/published.py", "    python validation/failure_mode.py",
             "    python validation/report.py", ""]
    lines += sbc_section() + published_section() + failure_section()
    (HERE / "REPORT.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
