"""The shared result of a stability study and how it is written (tables, zarr, plots, index page).

An instrument module (``reduce.stability.swas``, ``reduce.stability.mips``) returns a ``Study``:
tables (pandas DataFrames, written as ``OUT/<name>.csv`` and as the zarr group
``OUT/stability.zarr/<name>``) and ``Series`` (one plotted quantity each: ``OUT/<name>.png``, dates
on the x axis, the unit on the y axis, one line per group, the fitted trend drawn).
``write_study`` also fits every series with ``fit`` set (``reduce.stability.kernels.trend.analyse``:
linear drift + seasonal/orbital sinusoids, steps, outliers; per group) and writes ``trends.csv``
(one row per series and group: slope per year with its error, the sinusoid amplitudes, steps with
their MJD and size, outlier days), ``trend_steps.csv`` (one row per step) and ``index.html``.
``parse_when`` reads the --from / --to of ``skyreduce trend``.
"""
from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .kernels import trend as K

log = logging.getLogger(__name__)

STEP_POINTS = 2000   # series with more samples are searched for steps in their daily medians


@dataclass
class Series:
    """One plotted quantity (one PNG). ``time`` MJD (UTC) float64 (n,), ``value`` (n,) in ``units``,
    ``error`` (n,) 1-sigma or None, ``group`` (n,) labels or None (one line and one trend per
    group, e.g. the array or the receiver), ``fit``: fit a trend and search for steps, ``periods``:
    seasonal / orbital periods (days) to fit (only those the data span)."""

    name: str
    label: str
    units: str
    time: np.ndarray
    value: np.ndarray
    error: np.ndarray | None = None
    group: np.ndarray | None = None
    fit: bool = True
    periods: tuple = (K.YEAR_D,)


@dataclass
class Study:
    """What an instrument's ``study`` found: tables {name: DataFrame}, ``series`` [Series],
    ``problems`` (one line each: what could not be analysed; exit code 1 when any), ``notes``
    (one line each: what was not measured and why), ``span`` (MJD start, stop) analysed."""

    instrument: str
    tables: dict
    series: list
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    span: tuple = (None, None)


def parse_when(text) -> float:
    """MJD (UTC) of a WHEN: an MJD number ('53500', '53500.25') or an ISO date / date-time in UTC
    ('2005-06-01', '2005-06-01T12:00:00', '2005-06-01 12:00'). ValueError with a clear message
    otherwise."""
    from astropy.time import Time

    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value):
            raise ValueError(f"bad WHEN {text!r}: not a finite MJD")
        return value
    for fmt in ("isot", "iso"):
        try:
            return float(Time(s, format=fmt, scale="utc").mjd)
        except ValueError:
            continue
    raise ValueError(f"bad WHEN {text!r}: expected an ISO date or date-time in UTC (2005-06-01, "
                     "2005-06-01T12:00:00) or an MJD (53522.5)")


def mjd_to_datetime(mjd):
    """numpy datetime64[ms] of MJDs (UTC; NaN -> NaT)."""
    from astropy.time import Time

    mjd = np.asarray(mjd, np.float64)
    out = np.full(mjd.shape, np.datetime64("NaT"), dtype="datetime64[ms]")
    ok = np.isfinite(mjd)
    if ok.any():
        out[ok] = Time(mjd[ok], format="mjd", scale="utc").datetime64.astype("datetime64[ms]")
    return out


# ---------------------------------------------------------------- trends
def _groups(s: Series):
    if s.group is None:
        return [(None, np.ones(len(s.time), bool))]
    g = np.asarray(s.group)
    return [(v, g == v) for v in pd.unique(g)]


def _for_steps(t, y, e):
    """The samples the step search sees: the series, or when longer than ``STEP_POINTS`` its daily
    medians (at mid-day; relative errors 1 / sqrt(samples that day), the scale from the data)."""
    if t.size <= STEP_POINTS:
        return t, y, e
    days, med, counts = K.daily_medians(t, y)
    return days + 0.5, med, 1.0 / np.sqrt(counts)


def fit_series(s: Series, **kw):
    """[(group, Trend or None, outlier days (days, medians, z))] of one series, per group."""
    out = []
    for g, sel in _groups(s):
        t = np.asarray(s.time, np.float64)[sel]
        y = np.asarray(s.value, np.float64)[sel]
        e = None if s.error is None else np.asarray(s.error, np.float64)[sel]
        ok = np.isfinite(t) & np.isfinite(y)
        if not s.fit or ok.sum() < 4:
            out.append((g, None, (np.zeros(0),) * 3))
            continue
        tt, yy, ee = _for_steps(t[ok], y[ok], None if e is None else e[ok])
        steps = None
        if tt.size < t[ok].size:    # steps between days: at 0h UTC of the first day at the new level
            steps = [K.Step(-1, float(np.floor(st.mjd)), float(np.floor(st.mjd_before)), st.size, st.size_err, st.z)
                     for st in K.analyse(tt, yy, ee, periods=s.periods, **kw).steps]
        if steps is None:
            fit = K.analyse(t, y, e, periods=s.periods, **kw)
        else:   # steps from the daily medians, the fit over every sample
            fit = K.fit_trend(t, y, e, periods=s.periods, steps=steps)
            fit.outliers = K.running_outliers(t, y, e)
        resid = y - fit.predict(t) if np.isfinite(fit.coef).all() else y
        out.append((g, fit, K.outlier_days(t, resid)))
    return out


def _trend_rows(s: Series, fits):
    rows, steps = [], []
    v = np.asarray(s.value, np.float64)
    n_of = {g: int(np.isfinite(v[sel]).sum()) for g, sel in _groups(s)}
    for g, fit, (days, _, z) in fits:
        row = {"series": s.name, "group": "" if g is None else str(g), "units": s.units}
        if fit is None:
            rows.append(row | {"n": int(n_of[g])})
            continue
        slope, slope_err = fit.slope_per_year
        row |= {"n": fit.n, "mjd_start": fit.span[0], "mjd_stop": fit.span[1],
                "slope_per_year": slope, "slope_per_year_err": slope_err,
                "slope_per_day": fit.slope[0], "slope_per_day_err": fit.slope[1], "sigma": fit.sigma,
                "chi2_dof": fit.chi2_dof}
        for p in s.periods:
            a, ae = fit.amplitude(float(p))
            row[f"amplitude_{p:g}d"], row[f"amplitude_{p:g}d_err"] = a, ae
        row["n_steps"] = len(fit.steps)
        row["steps"] = "; ".join(f"{st.mjd:.5f}: {st.size:+.6g} +- {st.size_err:.3g}" for st in fit.steps)
        row["n_outliers"] = int(np.sum(fit.outliers)) if fit.outliers is not None else 0
        row["outlier_days"] = "; ".join(f"{d:.0f} (z {v:+.1f})" for d, v in zip(days, z))
        rows.append(row)
        steps += [{"series": s.name, "group": row["group"], "units": s.units, "mjd": st.mjd,
                   "mjd_before": st.mjd_before, "size": st.size, "size_err": st.size_err, "z": st.z}
                  for st in fit.steps]
    return rows, steps


# ---------------------------------------------------------------- plots
def plot_series(s: Series, fits, path):
    """One PNG: the samples per group (error bars when few), the fitted trend (steps included),
    steps as dashed lines; dates on the x axis, the unit on the y axis."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    try:
        t_all = np.asarray(s.time, np.float64)
        for (g, sel), (_, fit, _) in zip(_groups(s), fits):
            t, y = t_all[sel], np.asarray(s.value, np.float64)[sel]
            label = s.label if g is None else f"{g}"
            x = mjd_to_datetime(t)
            if s.error is not None and t.size <= 300:
                line = ax.errorbar(x, y, yerr=np.asarray(s.error, np.float64)[sel], fmt="o", ms=3, lw=0.8,
                                   label=label)[0]
            else:
                line = ax.plot(x, y, "o", ms=2 if t.size > 300 else 3, label=label)[0]
            if fit is None or not np.isfinite(fit.coef).all():
                continue
            ok = np.isfinite(t)
            grid = np.linspace(t[ok].min(), t[ok].max(), 2000)
            grid = np.unique(np.concatenate([grid, [st.mjd for st in fit.steps],
                                             [st.mjd - 1e-6 for st in fit.steps]]))
            slope, err, per = (*fit.slope_per_year, "yr") if fit.span[1] - fit.span[0] >= 30 else (*fit.slope, "d")
            ax.plot(mjd_to_datetime(grid), fit.predict(grid), "-", color=line.get_color(), lw=1.5,
                    label=f"trend{'' if g is None else f' {g}'}: {slope:+.3g} +- {err:.2g} ({s.units}) / {per}")
            for st in fit.steps:
                ax.axvline(mjd_to_datetime([st.mjd])[0], color=line.get_color(), ls="--", lw=1)
            if fit.outliers is not None and fit.outliers.any():
                ax.plot(x[fit.outliers], y[fit.outliers], "x", color="k", ms=5)
        ax.set_ylabel(f"{s.label} [{s.units}]" if s.units else s.label)
        ax.set_xlabel("date (UTC)")
        loc = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_title(s.label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------- writing
def _to_zarr(tables, path):
    import xarray as xr

    for name, df in tables.items():
        d = df.reset_index(drop=True).copy()
        for c in d.columns:
            if d[c].dtype == object or pd.api.types.is_string_dtype(d[c]):
                d[c] = d[c].astype(str).to_numpy(dtype=str)
        ds = xr.Dataset({c: ("row", np.asarray(d[c].to_numpy())) for c in d.columns})
        ds.attrs["table"] = name
        ds.to_zarr(path, group=name, mode="w", consolidated=False)


def _index_html(study, tables, plots, out):
    span = study.span
    when = ""
    if span and span[0] is not None and span[1] is not None and np.isfinite(span[0]) and np.isfinite(span[1]):
        a, b = mjd_to_datetime([span[0], span[1]])
        when = f"MJD {span[0]:.5f} - {span[1]:.5f} ({a} - {b} UTC)"
    e = html.escape
    lines = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>{e(study.instrument.upper())} stability</title></head><body>",
             f"<h1>{e(study.instrument.upper())} instrument stability</h1>", f"<p>{e(when)}</p>",
             "<h2>Tables</h2><ul>"]
    for name, path in tables:
        lines.append(f"<li><a href='{e(path.name)}'>{e(path.name)}</a> ({len(study.tables.get(name, [])) if name in study.tables else ''} rows)</li>")
    lines.append("<li><a href='stability.zarr'>stability.zarr</a> (the same tables as a zarr group)</li>")
    lines.append("</ul><h2>Plots</h2>")
    for s, path in plots:
        lines.append(f"<h3>{e(s.label)} [{e(s.units)}]</h3><p><a href='{e(path.name)}'>"
                     f"<img src='{e(path.name)}' alt='{e(s.label)}' width='800'></a></p>")
    for title, items in (("Problems", study.problems), ("Notes", study.notes)):
        if items:
            lines.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{e(str(x))}</li>" for x in items) + "</ul>")
    lines.append("</body></html>")
    (out / "index.html").write_text("\n".join(lines) + "\n")
    return out / "index.html"


def _fit_and_plot(s: Series, path, trend_kw):
    """Task body: the trend fits of one Series, its rows of trends.csv / trend_steps.csv, its PNG."""
    fits = fit_series(s, **trend_kw)
    rows, steps = _trend_rows(s, fits)
    return rows, steps, plot_series(s, fits, path)


def write_study(study: Study, out, client=None, **trend_kw) -> list[Path]:
    """Write a Study into folder ``out``: every table as CSV and into the zarr group
    ``stability.zarr``, ``trends.csv`` and ``trend_steps.csv``, one PNG per Series, ``index.html``.
    ``client``: a dask.distributed Client: the trend fits and plots run on its workers, one task per
    Series (``out`` must then be on a file system the workers share); None: here, one after the other.
    ``trend_kw``: passed to ``kernels.trend.analyse`` (threshold, outlier_z, ...). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, trend_rows, step_rows, plots = [], [], [], []
    paths = [out / f"{s.name}.png" for s in study.series]
    if client is not None and study.series:
        done = client.gather(client.map(_fit_and_plot, study.series, paths, trend_kw=trend_kw, pure=False))
    else:
        done = [_fit_and_plot(s, path, trend_kw) for s, path in zip(study.series, paths)]
    for s, (rows, steps, path) in zip(study.series, done):
        trend_rows += rows
        step_rows += steps
        plots.append((s, path))
    tables = dict(study.tables)
    tables["trends"] = pd.DataFrame(trend_rows)
    tables["trend_steps"] = pd.DataFrame(step_rows, columns=["series", "group", "units", "mjd", "mjd_before",
                                                             "size", "size_err", "z"])
    csvs = []
    for name, df in tables.items():
        path = out / f"{name}.csv"
        df.to_csv(path, index=False)
        csvs.append((name, path))
    study.tables.update({k: tables[k] for k in ("trends", "trend_steps")})
    zpath = out / "stability.zarr"
    if zpath.exists():
        import shutil
        shutil.rmtree(zpath)
    _to_zarr(tables, zpath)
    written += [p for _, p in csvs] + [zpath] + [p for _, p in plots]
    written.append(_index_html(study, csvs, plots, out))
    return written
