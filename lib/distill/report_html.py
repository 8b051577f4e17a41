"""Draw the teacher comparison: PNG plots (matplotlib, no display needed) and one self-contained HTML page
that embeds them, from the small pandas frames of distill.stages.report, with the students' Tables 1 and 2
when the frames have them. Plain Python: the report job and the notebook both call it.

    paths = render(frames, out_dir, notes=["..."])   # {"html": ..., "png": [...]}
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from distill.stages.report import ALL, BUCKETS


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: a batch job has no display
    import matplotlib.pyplot as plt

    return plt


def plot_lengths(hist: pd.DataFrame, path: Path) -> None:
    """Length distribution per teacher (all categories): share of responses per log2-length bin."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    h = hist[hist["category"] == ALL]
    for teacher, g in sorted(h.groupby("teacher")):
        g = g.sort_values("bin")
        ax.step(g["lo"], g["count"] / g["count"].sum(), where="post", label=teacher)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("response tokens (student tokenizer)")
    ax.set_ylabel("share of responses")
    ax.set_title("Token-length distribution")
    if not h.empty:  # no responses scored yet: an empty plot, without a legend of nothing
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_buckets(lengths: pd.DataFrame, path: Path) -> None:
    """The paper's length buckets per teacher, stacked."""
    plt = _plt()
    rows = lengths[lengths["category"] == ALL].sort_values("teacher")
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0.0] * len(rows)
    labels = dict(zip(BUCKETS, ("< 1,024", "1,024-10,240", "> 10,240"), strict=True))
    for b in BUCKETS:
        values = rows[f"share_{b}"].fillna(0).tolist()
        ax.bar(rows["teacher"], values, bottom=bottom, label=f"{labels[b]} tokens")
        bottom = [x + y for x, y in zip(bottom, values, strict=True)]
    ax.set_ylabel("share of responses")
    ax.set_title("Length buckets (<1,024 / 1,024-10,240 / >10,240)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(table: pd.DataFrame, title: str, ylabel: str, rot: int, path: Path, ylim=None) -> None:
    """Grouped bars: one group per index value, one bar per column."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    if table.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center")
    else:
        table.plot.bar(ax=ax, rot=rot)
        if table.shape[1] > 3:  # many models (students): a legend inside would cover bars
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_by_category(frame: pd.DataFrame, column: str, title: str, path: Path) -> None:
    """One bar per (category, teacher) of `column`."""
    table = frame[frame["category"] != ALL].pivot_table(index="category", columns="teacher", values=column)
    _bars(table, title, column, 0, path)


def plot_counts(frame: pd.DataFrame, index: str, title: str, path: Path) -> None:
    """Counts of `index` values per teacher (all categories), side by side."""
    table = frame[frame["category"] == ALL].pivot_table(index=index, columns="teacher", values="count",
                                                         aggfunc="sum", fill_value=0)
    _bars(table, title, "responses", 30, path)


def plot_adaptive(adaptive: pd.DataFrame, path: Path) -> None:
    """Mean response length per task (benchmark or difficulty), one bar per model."""
    table = adaptive.pivot_table(index="task", columns="model", values="mean_tokens")
    table = table.loc[adaptive.drop_duplicates("task").sort_values("task_order")["task"]]
    rot = 30 if max((len(t) for t in table.index), default=0) > 10 else 0  # "<benchmark>:<level>" labels overlap
    _bars(table, "Adaptive length: mean tokens per task", "mean response tokens", rot, path)


PLOTS = (
    ("lengths.png", "Token-length distribution", lambda f, p: plot_lengths(f["length_hist"], p)),
    ("buckets.png", "Length buckets", lambda f, p: plot_buckets(f["lengths"], p)),
    ("ppl.png", "Mean perplexity", lambda f, p: plot_by_category(f["lengths"], "mean_ppl", "Mean perplexity", p)),
    ("acceptance.png", "Acceptance rate",
     lambda f, p: plot_by_category(f["costs"], "acceptance_rate", "Acceptance rate", p)),
    ("attempts.png", "Attempts per accepted response",
     lambda f, p: plot_by_category(f["costs"], "attempts_per_accepted", "Attempts per accepted response", p)),
    ("verify.png", "Verify scores",
     lambda f, p: plot_counts(f["verify"], "score_bin", "Verify-score distribution", p)),
    ("rejects.png", "Reject reasons", lambda f, p: plot_counts(f["rejects"], "reason", "Curate reject reasons", p)),
)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda x: f"{x:,.3f}", na_rep="–", border=0)


INCOMPLETE = "incomplete"
LINEAGE = ("teachers", "sft version", "train key")


def _lineage(row) -> tuple[str, str, str]:
    teachers = row["teachers"]
    teachers = ", ".join(teachers) if teachers is not None and len(teachers) else "–"
    version = "–" if pd.isna(row["sft_version"]) else str(int(row["sft_version"]))
    key = "–" if pd.isna(row["train_key"]) else str(row["train_key"])[:8]  # enough to find it in `students`
    return teachers, version, key


def _pass_at_1(row) -> str:
    if pd.isna(row["pass_at_1"]):
        return "–"
    text = f"{100 * row['pass_at_1']:.1f}"
    return text if pd.isna(row["pass_at_1_stderr"]) else f"{text} ± {100 * row['pass_at_1_stderr']:.1f}"


def _tokens(row) -> str:
    return "–" if pd.isna(row["mean_tokens"]) else f"{row['mean_tokens']:,.0f}"


def _mark(text: str, complete) -> str:
    if complete:
        return text
    return INCOMPLETE if text == "–" else f"{INCOMPLETE} ({text})"


def student_grids(students: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """report_students rows -> (Table 1, Table 2): student x benchmark grids of text, pass@1 in % ± its standard
    error and mean tokens, each row first naming the student's teachers, sft version and train key (short). The
    figure of an incomplete result is never a plain number: it reads "incomplete (...)"; "–": no figure."""
    lineage = {r["student"]: _lineage(r) for _, r in students.drop_duplicates("student").iterrows()}
    benchmarks = sorted(students["benchmark"].unique())
    grids = []
    for cell in (_pass_at_1, _tokens):
        values = {(r["student"], r["benchmark"]): _mark(cell(r), r["complete"]) for _, r in students.iterrows()}
        rows = [[*lineage[s], *(values.get((s, b), "–") for b in benchmarks)] for s in sorted(lineage)]
        grids.append(pd.DataFrame(rows, columns=[*LINEAGE, *benchmarks],
                                  index=pd.Index(sorted(lineage), name="student")))
    return grids[0], grids[1]


def _grid_html(grid: pd.DataFrame) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in [grid.index.name, *grid.columns])
    rows = []
    for student, values in grid.iterrows():
        cells = "".join(f'<td class="{INCOMPLETE}">{esc(v)}</td>' if v.startswith(INCOMPLETE) else f"<td>{esc(v)}</td>"
                        for v in values)
        rows.append(f"<tr><th>{esc(str(student))}</th>{cells}</tr>")
    return f'<table class="students"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def students_section(students: pd.DataFrame) -> list[str]:
    """The page's Students section: the paper's Table 1 (pass@1) and Table 2 (mean tokens)."""
    if students.empty:
        return ["<h2>Students</h2>", "<p>No evaluation results yet.</p>"]
    table1, table2 = student_grids(students)
    return [
        "<h2>Students</h2>",
        "<p>Per student and benchmark (all difficulties) from <code>eval_results</code>, with the teachers whose "
        "rows the student learned from, the <code>sft</code> version and the train key (<code>students</code>). "
        f'<span class="{INCOMPLETE}">{INCOMPLETE}</span>: not every item has its samples, or some item could not '
        "be asked: the figure is not the benchmark's result.</p>",
        "<h3>Table 1: pass@1 (%, ± standard error)</h3>", _grid_html(table1),
        "<h3>Table 2: mean response tokens</h3>", _grid_html(table2),
    ]


def release_section(release: pd.DataFrame, disagreements: pd.DataFrame | None) -> list[str]:
    """A replayed release's own verification beside ours: the agreement table (report_release) and the
    responses where the verdicts differ (report_release_disagreements)."""
    from distill.stages.report import RELEASE_DISAGREEMENTS_MAX

    parts = ["<h2>Releases' own verification beside ours</h2>",
             "<p>Per teacher that replays a release, and category (<code>report_release</code>): responses with the "
             "release's own verify score, those we have a verdict for (compared), how many each side passes at "
             "<code>generate.threshold</code>, how many verdicts agree, and the mean scores over the compared "
             "ones.</p>", _table(release.sort_values(["teacher", "category"]))]
    if disagreements is not None and not disagreements.empty:
        parts += ["<h3>Where the verdicts differ</h3>",
                  f"<p>The widest score gaps first, at most {RELEASE_DISAGREEMENTS_MAX} per teacher and category "
                  "(<code>report_release_disagreements</code>; join <code>attempts</code> for the response and "
                  "<code>queries</code> for the question and its reference).</p>",
                  _table(disagreements.sort_values(["teacher", "category", "query_id", "attempt"]))]
    return parts


def plot_experiment(results: pd.DataFrame, title: str, path: Path) -> None:
    """pass@1 (%) of each benchmark per variant, in the config's order, each variant labelled with its
    dataset size."""
    order = list(dict.fromkeys(results["variant"]))
    sizes = results.drop_duplicates("variant").set_index("variant")["rows"]
    table = results.pivot_table(index="variant", columns="benchmark", values="pass_at_1") * 100
    table = table.reindex(order)
    table.index = [f"{v}\n({int(sizes[v]):,} rows)" for v in order]
    top = table.max().max()
    _bars(table, title, "pass@1 (%)", 30, path, (0, 100 if pd.isna(top) or top > 50 else max(5.0, top * 1.2)))


def in_config_order(frame: pd.DataFrame, cfg) -> pd.DataFrame:
    """experiment_results rows with the variants in the order the config lists them (others after)."""
    order = [(e.name, v.name) for e in cfg.experiments for v in e.variants]
    rank = [order.index(k) if k in order else len(order)
            for k in zip(frame["experiment"], frame["variant"], strict=True)]
    return frame.assign(_rank=rank).sort_values(["_rank", "experiment", "variant"], kind="stable").drop(
        columns="_rank")


def experiments_section(results: pd.DataFrame, out: Path) -> tuple[list[str], list[str]]:
    """Per experiment: the comparison table (dataset figures and pass@1 per benchmark, one row per variant)
    and its plot. Returns (html parts, png paths)."""
    parts = ["<h2>Experiments</h2>",
             "<p>Per variant (<code>experiment_results</code>): its dataset's rows, tokens, mean length and length "
             "entropy (student tokens), mean perplexity, and its student's pass@1 (%) per benchmark. "
             "<code>experiments</code> holds each variant's recipe, dataset key and student.</p>"]
    pngs = []
    for name in dict.fromkeys(results["experiment"]):
        mine = results[results["experiment"] == name]
        order = list(dict.fromkeys(mine["variant"]))
        figures = mine.drop_duplicates("variant").set_index("variant")[
            ["rows", "tokens", "mean_length", "length_entropy", "mean_ppl"]]
        scores = mine.pivot_table(index="variant", columns="benchmark", values="pass_at_1") * 100
        table = figures.join(scores.add_prefix("pass@1 ")).reindex(order).reset_index()
        path = out / f"experiment-{name}.png"
        plot_experiment(mine, f"Experiment {name}: pass@1 per variant", path)
        pngs.append(str(path))
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [f"<h3>{html.escape(name)}</h3>", _table(table),
                  f'<img alt="experiment {html.escape(name)}" src="data:image/png;base64,{data}">']
    return parts, pngs


def render(frames: dict[str, pd.DataFrame], out_dir: str | Path, notes: list[str] = ()) -> dict:
    """Write the PNGs and report.html (images embedded as data URIs, so the page stands alone) to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections, pngs = [], []
    plots = list(PLOTS)
    if frames.get("adaptive") is not None and not frames["adaptive"].empty:
        plots.append(("adaptive.png", "Adaptive length", lambda f, p: plot_adaptive(f["adaptive"], p)))
    for name, title, draw in plots:
        path = out / name
        draw(frames, path)
        pngs.append(str(path))
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        sections.append(f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" '
                        f'src="data:image/png;base64,{data}">')
    summary = frames["costs"].merge(frames["lengths"], on=["teacher", "category"], how="outer")
    students = frames.get("students")
    experiments: list[str] = []
    if frames.get("experiments") is not None and not frames["experiments"].empty:
        experiments, more = experiments_section(frames["experiments"], out)
        pngs += more
    page = "\n".join([
        "<!doctype html>", '<html><head><meta charset="utf-8"><title>distill: teacher comparison</title>',
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;text-align:right}"
        "tr:nth-child(even){background:#f3f3f3}.note{background:#fff4d6;padding:8px}"
        ".incomplete{color:#a00;font-style:italic}</style></head><body>",
        "<h1>Teacher comparison</h1>",
        *[f'<p class="note">{html.escape(n)}</p>' for n in notes],
        "<h2>Summary per teacher and category</h2>", _table(summary),
        *(students_section(students) if students is not None else []),
        *(release_section(frames["release"], frames.get("release_disagreements"))
          if frames.get("release") is not None and not frames["release"].empty else []),
        *(["<h2>Math reference audit</h2>", _table(frames["audit"])] if frames.get("audit") is not None else []),
        *experiments, *sections, "</body></html>",
    ])
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return {"html": str(page_path), "png": pngs}
