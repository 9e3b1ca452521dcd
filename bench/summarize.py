"""Print the results in bench/results/*.json as one markdown table (for bench/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rows(name: str, d: dict) -> list[tuple[str, str, str, str]]:
    """(figure, absolute, ratio vs floor, target) rows of one result file."""
    q = " (quick)" if d.get("quick") else ""
    if name == "generate":
        f = d["full"]
        share = ", ".join(f"{k} {v:.0%}" for k, v in d["components"]["share"].items())
        return [(f"generate{q}: {f['logs']} logs, {f['sweeps']} sweeps", (f"{f['seconds']} s, {f['sweeps_per_s']} "
                 f"sweeps/s, {f['images_per_s']} img/s; split {share}"),
                 f"full / single-process components {d['ratio_full_vs_components']}", _t(d, "<= 120 s"))]
    if name == "reader":
        b = d["best"]
        return [(f"reader{q}: load_bundle, {d['sweeps']} sweeps", (f"with annotations {b['with_annotations']['sweeps_per_s']}"
                 f" sweeps/s ({b['with_annotations']['images_per_s']} img/s); sensors-only "
                 f"{b['sensors_only']['sweeps_per_s']}; floor {b['floor']['sweeps_per_s']}"),
                 (f"sensors-only {d['ratio_sensors_only_vs_floor']}x, with annotations "
                 f"{d['ratio_with_annotations_vs_floor']}x"), _t(d, "sensors-only <= 1.20x"))]
    if name == "preprocess":
        out = []
        for prof in ("default", "gpu_profile"):
            p, c = d[prof]["per_sample"], d[prof]["cache"]
            stage = d[prof].get("run_preprocess")
            st = (f"; run_preprocess {stage['samples_per_s']} samples/s ({stage['workers']} workers, "
                  f"per-worker {stage['ratio_per_worker_vs_floor']}x floor)" if stage else "")
            out.append((f"preprocess{q} {prof} ({p['samples']} samples)",
                        (f"build_sample {p['build_sample_per_s']}/s, worker path {p['worker_path_per_s']}/s, floor "
                        f"{p['floor_per_s']}/s{st}"),
                        (f"worker path {p['ratio_worker_path_vs_floor']}x, build_sample "
                        f"{p['ratio_build_sample_vs_floor']}x, load_bundle {p['ratio_load_bundle_vs_floor']}x"),
                        _t(d, "<= 2.0x")))
            out.append((f"cache{q} {prof}: jpeg vs raw", (f"jpeg {c['jpeg']['bytes_per_sample'] / 1e3:.0f} kB, get "
                        f"{c['jpeg']['lmdb_get_per_s']}/s; raw {c['raw']['bytes_per_sample'] / 1e3:.0f} kB, get "
                        f"{c['raw']['lmdb_get_per_s']}/s"), (f"raw/jpeg bytes {c['raw_vs_jpeg_bytes']}x, get speed "
                        f"{c['raw_vs_jpeg_get_speed']}x"), "-"))
        return out
    if name == "train_loop":
        return [(f"train loop{q}: batch {d['batch_size']}, {d['loader_workers']} loader worker(s)",
                 (f"loop {d['loop_samples_per_s']} samples/s, model-only {d['model_only_samples_per_s']}, loader "
                 f"alone {d['loader_only_samples_per_s']}; data-wait {d['data_wait_fraction']:.0%}"),
                 f"loop / model-only {d['ratio_loop_vs_model_only']}", _t(d, ">= 0.90"))]
    if name == "scaling":
        s = d["sizes"]
        sizes = ", ".join(f"{k} {v['samples']} samples" for k, v in s.items())
        return [(f"scaling{q}: {sizes}",
                 (f"preprocess {[v['preprocess_s'] for v in s.values()]} s; train {d['epochs']} epoch "
                 f"{[v['train_s'] for v in s.values()]} s"),
                 (f"exponent preprocess {d['exponent_preprocess']}, train {d['exponent_train']}; pairwise "
                  + ", ".join(f"{k}: {v['preprocess']}/{v['train']}" for k, v in d.get("local_exponents", {}).items())),
                 _t(d, "<= ~1"))]
    if name.startswith("repro"):
        noop = d["noop_repro"].get("seconds")
        label = "dvc repro" + (f", train.epochs={name.removeprefix('repro_train_epochs')}" if name != "repro" else "")
        return [(f"{label}{q}", (f"total {d['total_s']:.0f} s{'' if d['complete'] else ' (incomplete)'} "
                                   f"[{', '.join(_stage(k, v) for k, v in d['stages'].items())}]; "
                                   f"no-op {f'{noop} s' if noop is not None else 'not run'}"),
                 f"no-op / `dvc --version` {d.get('ratio_noop_vs_dvc_version')}",
                 f"total <= 600 s: {_ok(d['target_met']['total'])}; no-op <= 3 s: {_ok(d['target_met']['noop'])}")]
    if name.startswith("gpu_profile"):
        s = d["synthetic"]
        return [(f"{name}{q} on {d['device']}", (f"{s['loop_samples_per_s']} samples/s, peak {s['peak_memory_gb']} GB, "
                 f"data-wait {s['data_wait_fraction']:.0%}"), f"loop / model-only {s['ratio_loop_vs_model_only']}", "-")]
    return []


def _stage(name: str, v: dict) -> str:
    if "seconds" not in v:
        return f"{name} not run"
    if v.get("status", "ok") == "ok":
        return f"{name} {v['seconds']:.0f} s"
    proj = (v.get("progress") or {}).get("projected_s")
    return f"{name} {v['status']} at {v['seconds']:.0f} s" + (f" (projected {proj} s)" if proj else "")


def _ok(v: bool | None) -> str:
    return "n/a" if v is None else ("met" if v else "MISSED")


def _t(d: dict, target: str) -> str:
    return f"{target}: {_ok(d.get('target_met'))}"


def main() -> None:
    print("| figure | absolute | ratio vs same-run floor | target |")
    print("|---|---|---|---|")
    for path in sorted(RESULTS.glob("*.json")):
        d = json.loads(path.read_text())
        for r in rows(d["benchmark"], d):
            print("| " + " | ".join(r) + " |")
        m = d["machine"]
        print(f"|   ↳ {d['machine']['date_utc']}, commit {m['git_commit'][:7]}{'+dirty' if m['git_dirty'] else ''}, "
              f"{m['cpus_usable']} cores, torch threads {m['torch_threads']}, load {m['loadavg_1m_at_end']} | | | |")


if __name__ == "__main__":
    main()
