// procorch dashboard: the hash-routed pages (overview, service, jobs, job, events) drawn from
// the gateway's JSON API. The DOM's data-testid and data-* attributes are a contract with the
// browser tests (tests/test_dashboard_browser.py): rename none without changing them.
// Runs under CSP script-src 'self': no eval, no inline style attributes (classes only).
import {
  html,
  render,
  useState,
  useEffect,
  useMemo,
  useRef,
} from "./vendor/htm-preact-standalone.module.js";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const POLL_MS = 1000;
const PAGE = 50;
const STATUSES = ["pending", "running", "waiting", "done", "failed", "cancelled"];
const SIGNALS = ["HUP", "TERM", "INT", "USR1", "USR2", "KILL", "QUIT"];
const MAX_LOG_LINES = 1000;
const MAX_EVENTS = 500;
const NA = "—";

// == formatting ==============================================================================

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const pad = (n) => String(n).padStart(2, "0");

/** Seconds as people read an uptime: 45s, 3m 12s, 1h 2m, 2d 5h. */
function dur(s) {
  if (!isNum(s)) return NA;
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  // the smaller unit only when it says something: 1h, 1h 2m
  const two = (big, unit, small, smallUnit) =>
    small ? `${big}${unit} ${small}${smallUnit}` : `${big}${unit}`;
  if (d) return two(d, "d", h, "h");
  if (h) return two(h, "h", m, "m");
  if (m) return two(m, "m", s % 60, "s");
  return `${s}s`;
}

/** A job's run time, which is often well under a second. */
function secs(s) {
  if (!isNum(s)) return NA;
  if (s < 1) return `${+(s * 1000).toPrecision(3)} ms`;
  if (s < 60) return `${+s.toFixed(2)} s`;
  return dur(s);
}

/** Binary units, as the CLI prints them (procorch/sizes.py). */
function bytes(b) {
  if (!isNum(b)) return NA;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return i ? `${b.toFixed(1)} ${units[i]}` : `${b} B`;
}

const pct = (v) => (isNum(v) ? `${v.toFixed(1)}%` : NA);
const plain = (v) => (isNum(v) ? String(v) : NA);

/** An ISO time (or epoch seconds, as an attempt's `at`) as local date and time. */
function when(iso) {
  const d = iso == null || iso === "" ? null : new Date(isNum(iso) ? iso * 1000 : iso);
  if (!d || Number.isNaN(d.getTime())) return iso ?? NA;
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function relative(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = (t - Date.now()) / 1000;
  return s >= 0 ? `in ${dur(s)}` : `${dur(-s)} ago`;
}

const between = (a, b) => (a && b ? (Date.parse(b) - Date.parse(a)) / 1000 : null);

const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
const short = (value, max) => clip(JSON.stringify(value) ?? "undefined", max);

/** How a job's call reads: fn(1, "a", width=640). */
function callText(job) {
  const args = (job.args || []).map((a) => short(a, 30));
  const kwargs = Object.entries(job.kwargs || {}).map(([k, v]) => `${k}=${short(v, 30)}`);
  return clip(`${job.function}(${[...args, ...kwargs].join(", ")})`, 80);
}

const pretty = (v) => (v === undefined ? "" : JSON.stringify(v, null, 2));

// == the API =================================================================================

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = CSRF;
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch {
    throw new Error("the gateway does not answer");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!resp.ok || data?.status === "error") {
    if (data?.message) throw new Error(data.message);
    if (resp.status === 401)
      throw new Error("not signed in: open the URL `procorch dashboard` prints");
    throw new Error(`the gateway answered HTTP ${resp.status}`);
  }
  return data;
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
};

const enc = encodeURIComponent;

const HISTORY = 600; // points a series keeps, as the gateway does

/**
 * A loader for an endpoint whose answer carries history (`seriesOf` finds its series, by
 * name): the first call gets the history whole; later ones say since when they hold it
 * (`since`) and get only each series' newest point, appended here. So a poll each second
 * moves a few hundred bytes, not ten minutes of points.
 */
function historyLoader(path, seriesOf) {
  let held = null;
  return async () => {
    const times = held ? [...seriesOf(held).values()].map((s) => s.t.at(-1) ?? 0) : [];
    const since = times.length ? Math.max(...times) : null;
    const sep = path.includes("?") ? "&" : "?";
    const fresh = await api(since == null ? path : `${path}${sep}since=${since}`);
    if (held) {
      const old = seriesOf(held);
      for (const [name, series] of seriesOf(fresh)) {
        const before = old.get(name);
        if (before && series.t.length === 1 && before.t.length) {
          const grew = series.t[0] > before.t.at(-1);
          for (const key of Object.keys(series)) {
            const kept = before[key] ?? [];
            series[key] = (grew ? [...kept, series[key][0]] : kept).slice(-HISTORY);
          }
        }
      }
    }
    held = fresh;
    return fresh;
  };
}

const overviewSeries = (d) => new Map(d.services.map((s) => [s.name, s.series]));

// == polling =================================================================================

/** Run `step` now and again a second after each run ends, while the tab is visible. */
function loop(step) {
  let alive = true;
  let busy = false;
  let again = false;
  let timer = null;
  const run = async () => {
    timer = null;
    if (!alive || document.visibilityState === "hidden") return; // the tab's return resumes
    busy = true;
    try {
      await step();
    } finally {
      busy = false;
    }
    if (alive && !timer) timer = setTimeout(run, again ? 0 : POLL_MS);
    again = false;
  };
  const now = () => {
    if (!alive) return;
    if (busy)
      again = true; // the answer in flight may predate what changed
    else {
      clearTimeout(timer);
      run();
    }
  };
  const onVisible = () => document.visibilityState === "visible" && now();
  document.addEventListener("visibilitychange", onVisible);
  run();
  return {
    now,
    stop() {
      alive = false;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

/** The page's one read endpoint, polled: [data, error, refresh]. */
function usePoll(load, deps) {
  const [state, setState] = useState({ data: null, error: null });
  const ctl = useRef(null);
  useEffect(() => {
    let alive = true;
    ctl.current = loop(async () => {
      try {
        const data = await load();
        if (alive) setState({ data, error: null });
      } catch (e) {
        if (alive) setState((s) => ({ data: s.data, error: e.message }));
      }
    });
    return () => {
      alive = false;
      ctl.current.stop();
    };
  }, deps);
  return [state.data, state.error, () => ctl.current?.now()];
}

/** A list fed by `after=offset` polls: the first call gets the latest, later ones what's new. */
function useTail(url, key, pick, cap, deps) {
  const [state, setState] = useState({ items: [], extra: null, error: null });
  useEffect(() => {
    let alive = true;
    let offset = null;
    setState({ items: [], extra: null, error: null });
    const ctl = loop(async () => {
      try {
        const data = await api(url(offset));
        if (!alive) return;
        const fresh = data[key] || [];
        const first = offset === null;
        offset = data.offset;
        setState((s) => ({
          items: (first ? fresh : [...s.items, ...fresh]).slice(-cap),
          extra: pick ? pick(data) : null,
          error: null,
        }));
      } catch (e) {
        if (alive) setState((s) => ({ ...s, error: e.message }));
      }
    });
    return () => {
      alive = false;
      ctl.stop();
    };
  }, deps);
  return state;
}

function useDebounced(value, ms = 250) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(t);
  }, [value]);
  return settled;
}

const useTitle = (title) =>
  useEffect(() => {
    document.title = title ? `${title} · procorch` : "procorch";
  }, [title]);

// == actions: confirm, then say how it went =================================================

/** [ask, view]: ask(label, text, run) opens the dialog; view is the dialog and the outcome. */
function useActions(after) {
  const [shown, setShown] = useState(null); // what the dialog asks
  const [outcome, setOutcome] = useState(null);
  const dialog = useRef(null);
  const pending = useRef(null); // read on OK at once: a quick click may come before a render
  const ask = (label, text, run) => {
    pending.current = { label, text, run };
    setShown(pending.current);
    // opened here, not after the next render, so it is open as soon as the click has been handled
    if (!dialog.current.open) dialog.current.showModal();
  };
  const closed = () => {
    pending.current = null;
    setShown(null);
  };
  const confirmed = async () => {
    const action = pending.current;
    dialog.current.close();
    if (!action) return;
    const { label, run } = action;
    setOutcome({ kind: "busy", text: `${label}: working…` });
    try {
      const note = await run();
      const more = typeof note === "string" && note ? ` (${note})` : "";
      setOutcome({ kind: "ok", text: `${label}: done${more}` });
    } catch (e) {
      setOutcome({ kind: "error", text: `${label} failed: ${e.message}` });
    }
    after?.();
  };
  const view = html`
    <dialog
      ref=${dialog}
      class="confirm"
      data-testid="confirm-dialog"
      aria-labelledby="confirm-title"
      onClose=${closed}
    >
      <h2 id="confirm-title">${shown?.label}?</h2>
      <p>${shown?.text}</p>
      <div class="buttons">
        <button type="button" data-testid="confirm-cancel" onClick=${() => dialog.current.close()}>
          Cancel
        </button>
        <button type="button" class="primary" data-testid="confirm-ok" onClick=${confirmed}>
          ${shown?.label}
        </button>
      </div>
    </dialog>
    <p data-testid="outcome" class=${`outcome ${outcome?.kind ?? "none"}`} role="status">
      ${outcome?.text}
    </p>
  `;
  return [ask, view];
}

// == pieces ==================================================================================

const State = ({ word, field }) =>
  html`<span class=${`state s-${word}`} data-field=${field}>${word ?? NA}</span>`;

const Problem = ({ error, data }) =>
  error &&
  html`<p class="banner error" role="alert">
    ${data ? "Showing the last answer: " : "Cannot load: "}${error}
  </p>`;

const Loading = () => html`<p class="muted">Loading…</p>`;

function themeColour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function axis(extra) {
  const fg = themeColour("--muted");
  return {
    stroke: fg,
    grid: { stroke: themeColour("--grid"), width: 1 },
    ticks: { stroke: themeColour("--grid"), width: 1 },
    ...extra,
  };
}

/** A uPlot chart that follows its box's width; `config()` builds its options once. */
function Plot({ testid, data, config, height, label }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!window.uPlot) return undefined;
    const u = new window.uPlot({ ...config(), width: el.clientWidth || 300, height }, data, el);
    plot.current = u;
    const watch = new ResizeObserver(() => {
      const width = el.clientWidth;
      if (width && width !== u.width) u.setSize({ width, height });
    });
    watch.observe(el);
    return () => {
      watch.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, []);
  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  return html`<div
    class="chart"
    data-testid=${testid}
    ref=${box}
    role="img"
    aria-label=${label}
  ></div>`;
}

/** Time ticks as local clock times: seconds only when the ticks are under a minute apart. */
function clockTicks(u, splits, axisIdx, space, incr) {
  return splits.map((t) => {
    const d = new Date(t * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return incr < 60 ? `${hm}:${pad(d.getSeconds())}` : hm;
  });
}

const fromZero = (u, min, max) => [0, max > 0 ? max * 1.1 : 1];

// dots only while there are too few points to draw a line
const points = { show: (u) => u.data[0].length < 3 };

/** Two lines over time, each on its own axis (left and right). */
function timeChart(left, right) {
  return () => ({
    scales: { x: { time: true }, l: { range: fromZero }, r: { range: fromZero } },
    series: [
      { label: "time", value: orNA((t) => new Date(t * 1000).toLocaleTimeString()) },
      {
        label: left.label,
        scale: "l",
        stroke: themeColour("--c1"),
        width: 1.5,
        value: left.value,
        points,
      },
      {
        label: right.label,
        scale: "r",
        stroke: themeColour("--c2"),
        width: 1.5,
        value: right.value,
        points,
      },
    ],
    axes: [
      axis({ space: 64, values: clockTicks }),
      axis({ scale: "l", size: 44, values: (u, vs) => vs.map(left.tick) }),
      axis({
        scale: "r",
        side: 1,
        size: 76,
        grid: { show: false },
        values: (u, vs) => vs.map(right.tick),
      }),
    ],
    cursor: { drag: { x: false, y: false } },
  });
}

const orNA = (f) => (u, v) => (v == null ? NA : f(v));
const compact = (v) => (Math.abs(v) >= 1000 ? `${+(v / 1000).toFixed(1)}k` : `${+v.toFixed(2)}`);

const serviceChart = timeChart(
  { label: "requests/s", value: orNA((v) => v.toFixed(1)), tick: compact },
  { label: "memory", value: orNA(bytes), tick: (v) => bytes(v).replace(".0 ", " ") },
);

const jobsChart = timeChart(
  { label: "finished/s", value: orNA((v) => v.toFixed(2)), tick: compact },
  { label: "pending", value: orNA((v) => String(Math.round(v))), tick: compact },
);

const seriesData = (series, a, b) => [series?.t ?? [], series?.[a] ?? [], series?.[b] ?? []];

const ServiceChart = ({ service, height }) => html`
  <${Plot}
    testid="service-chart"
    data=${seriesData(service.series, "requests_per_s", "rss_bytes")}
    config=${serviceChart}
    height=${height}
    label=${`${service.name}: requests per second and memory over time`}
  />
`;

// == replicas ================================================================================

// the data-field cells after the state, in the contract's order
const FIELDS = ["pid", "uptime", "restarts", "cpu", "memory", "heartbeat", "requests", "errors"];

function cells(r) {
  return {
    pid: [plain(r.pid), r.pid],
    uptime: [dur(r.uptime), r.uptime, isNum(r.uptime) ? `${Math.round(r.uptime)} seconds` : ""],
    restarts: [plain(r.restarts), r.restarts],
    cpu: [pct(r.cpu_percent), r.cpu_percent],
    memory: [bytes(r.rss_bytes), r.rss_bytes, isNum(r.rss_bytes) ? `${r.rss_bytes} bytes` : ""],
    heartbeat: [
      isNum(r.heartbeat_age) ? `${r.heartbeat_age.toFixed(1)}s ago` : NA,
      r.heartbeat_age,
    ],
    requests: [plain(r.requests), r.requests],
    errors: [plain(r.errors), r.errors],
  };
}

const DOWN = new Set(["backoff", "exited", "fatal"]);

/** The replicas' table; why a process last ended is shown for those that are down, or for
 * all of them (`exits`) where there is room (a service's own page). */
function Replicas({ service, exits: all = false }) {
  const reps = service.replicas || [];
  if (!reps.length) return html`<p class="muted">No replicas.</p>`;
  const why = (r) => (all || DOWN.has(r.state) ? r.last_exit : null);
  const exits = reps.some(why);
  return html`
    <div class="table-wrap">
      <table class="replicas">
        <thead>
          <tr>
            <th scope="col">replica</th>
            <th scope="col">state</th>
            ${FIELDS.map((f) => html`<th scope="col">${f}</th>`)}
            ${exits && html`<th scope="col">last exit</th>`}
          </tr>
        </thead>
        <tbody>
          ${reps.map((r) => {
            const c = cells(r);
            return html`
              <tr data-testid="replica" data-service=${service.name} data-replica=${r.replica}>
                <th scope="row" class="name" title=${`${service.name}.${r.replica}`}>
                  <span class="rn">${service.name}</span>.${r.replica}
                </th>
                <td data-field="state"><${State} word=${r.state} /></td>
                ${FIELDS.map(
                  (f) =>
                    html`<td
                      class="num"
                      data-field=${f}
                      data-value=${c[f][1] ?? ""}
                      title=${c[f][2]}
                    >
                      ${c[f][0]}
                    </td>`,
                )}
                ${exits && html`<td class="exit">${why(r) ?? ""}</td>`}
              </tr>
            `;
          })}
        </tbody>
      </table>
    </div>
  `;
}

// == overview ================================================================================

function Overview() {
  useTitle("Overview");
  const [data, error, refresh] = usePoll(historyLoader("/api/overview", overviewSeries), []);
  const [ask, actions] = useActions(refresh);
  const reload = () =>
    ask("Reload the configuration", "Read procorch.toml again and apply what changed.", () =>
      api("/api/reload", { dry_run: false }).then((r) => (r.applied ? "" : "nothing to apply")),
    );
  return html`
    <${Problem} error=${error} data=${data} />
    ${
      data
        ? html`
            <div class="top">
              <${Daemon} daemon=${data.daemon} />
              <${JobsSummary} jobs=${data.jobs} />
            </div>
            <${Warnings} warnings=${data.warnings || []} />
            <section class="bar">
              <h2>Services <span class="muted">(${data.services.length})</span></h2>
              <button type="button" data-testid="action-reload" onClick=${reload}>
                Reload config
              </button>
            </section>
            ${actions}
            ${data.services.map((s) => html`<${ServiceCard} key=${s.name} service=${s} />`)}
          `
        : !error && html`<${Loading} />`
    }
  `;
}

function Daemon({ daemon }) {
  return html`
    <section class="card daemon" data-testid="daemon">
      <h2>Daemon <${State} word=${daemon.state} /></h2>
      <dl class="facts">
        <dt>pid</dt>
        <dd>${plain(daemon.pid)}</dd>
        <dt>uptime</dt>
        <dd title=${isNum(daemon.uptime) ? `${Math.round(daemon.uptime)} seconds` : ""}>
          ${dur(daemon.uptime)}
        </dd>
        <dt>config</dt>
        <dd class="path">${daemon.config || "none"}</dd>
        <dt>run dir</dt>
        <dd class="path">${daemon.run_dir}</dd>
      </dl>
    </section>
  `;
}

function JobsSummary({ jobs }) {
  return html`
    <section class="card jobs-summary" data-testid="jobs-summary">
      <h2><a href="#/jobs">Jobs</a></h2>
      ${
        jobs
          ? html`
              <ul class="counts">
                ${STATUSES.map(
                  (s) =>
                    html`<li>
                      <a href=${`#/jobs?status=${s}`}
                        ><span class=${`state s-${s}`}>${s}</span> ${jobs.counts?.[s] ?? 0}</a
                      >
                    </li>`,
                )}
              </ul>
              <p><a href="#/jobs">All ${jobs.total} jobs →</a></p>
            `
          : html`<p class="muted">The job store does not answer.</p>`
      }
    </section>
  `;
}

function Warnings({ warnings }) {
  return html`
    <ul class="warnings" data-testid="warnings" aria-label="warnings">
      ${warnings.map(
        (w) =>
          html`<li data-testid="warning" class=${`warning ${w.level}`}>
            <strong>${w.level}</strong>
            ${w.service && html` <a href=${`#/services/${enc(w.service)}`}>${w.service}</a>`}:
            ${" "}${w.message}
          </li>`,
      )}
    </ul>
  `;
}

function ServiceHead({ service, link }) {
  const n = service.replicas?.length ?? 0;
  return html`
    ${
      link
        ? html`<h2>
            <a data-testid="service-link" href=${`#/services/${enc(service.name)}`}
              >${service.name}</a
            >
          </h2>`
        : html`<h1>${service.name}</h1>`
    }
    <${State} word=${service.state} />
    <span class=${`health h-${service.health}`}>${service.health}</span>
    <span class="muted">${n} ${n === 1 ? "replica" : "replicas"}</span>
  `;
}

function ServiceCard({ service }) {
  return html`
    <section class="card service" data-testid="service-row" data-service=${service.name}>
      <header class="service-head"><${ServiceHead} service=${service} link=${true} /></header>
      <div class="service-body">
        <${Replicas} service=${service} />
        <${ServiceChart} service=${service} height=${120} />
      </div>
    </section>
  `;
}

// == one service =============================================================================

function ServicePage({ name }) {
  useTitle(name);
  const [data, error, refresh] = usePoll(
    historyLoader(`/api/services/${enc(name)}`, (d) => new Map([["", d.service.series]])),
    [],
  );
  const [ask, actions] = useActions(refresh);
  const [scaleTo, setScaleTo] = useState(null);
  const [signal, setSignal] = useState("HUP");
  const [group, setGroup] = useState(false);
  const [logReplica, setLogReplica] = useState(0);
  if (!data) {
    return html`<${Back} /><${Problem}
        error=${error}
        data=${data}
      />${!error && html`<${Loading} />`}`;
  }
  const s = data.service;
  const reps = s.replicas || [];
  const base = `/api/services/${enc(s.name)}`;
  const post = (verb, body) => () => api(`${base}/${verb}`, body);
  const rolling = reps.length > 1;
  const scaleValue = scaleTo ?? String(reps.length);
  const restart = () =>
    rolling
      ? ask(
          `Rolling restart of ${s.name}`,
          `Restart the ${reps.length} replicas one at a time.`,
          post("restart", { rolling: true }),
        )
      : ask(
          `Restart ${s.name}`,
          "Stop its process and start it again.",
          post("restart", { rolling: false }),
        );
  const scale = () => {
    // the server says what is wrong with a bad number; send what was typed
    const n = /^\d+$/.test(scaleValue.trim()) ? Number(scaleValue) : scaleValue;
    ask(
      `Scale ${s.name} to ${scaleValue}`,
      `Run ${scaleValue} replicas (now ${reps.length}).`,
      post("scale", { replicas: n }),
    );
  };
  const sendSignal = () =>
    ask(
      `Send SIG${signal} to ${s.name}`,
      `Signal ${group ? "the process group of " : ""}every running replica.`,
      () =>
        api(`${base}/signal`, { signal, group }).then((r) => {
          const hit = (r.results || []).filter((x) => x.signalled).length;
          return `${r.signal} reached ${hit} of ${(r.results || []).length} replicas`;
        }),
    );
  return html`
    <${Back} />
    <${Problem} error=${error} data=${data} />
    <article class="service-page" data-testid="service-page" data-service=${s.name}>
      <header class="service-head"><${ServiceHead} service=${s} link=${false} /></header>
      <section class="card actions" aria-label="actions">
        <div class="action-row">
          <button type="button" data-testid="action-restart" onClick=${restart}>
            ${rolling ? "Rolling restart" : "Restart"}
          </button>
          <button
            type="button"
            data-testid="action-stop"
            onClick=${() => ask(`Stop ${s.name}`, "Stop every replica.", post("stop", {}))}
          >
            Stop
          </button>
          <button
            type="button"
            data-testid="action-start"
            onClick=${() => ask(`Start ${s.name}`, "Start every replica that is not running.", post("start", {}))}
          >
            Start
          </button>
        </div>
        <div class="action-row">
          <label>
            Replicas
            <input
              type="number"
              min="1"
              step="1"
              inputmode="numeric"
              data-testid="scale-input"
              value=${scaleValue}
              onInput=${(e) => setScaleTo(e.currentTarget.value)}
            />
          </label>
          <button type="button" data-testid="action-scale" onClick=${scale}>Scale</button>
        </div>
        <div class="action-row">
          <label>
            Signal
            <select
              data-testid="signal-select"
              value=${signal}
              onChange=${(e) => setSignal(e.currentTarget.value)}
            >
              ${SIGNALS.map((x) => html`<option value=${x}>${x}</option>`)}
            </select>
          </label>
          <label class="check">
            <input
              type="checkbox"
              data-testid="signal-group"
              checked=${group}
              onChange=${(e) => setGroup(e.currentTarget.checked)}
            />
            process group
          </label>
          <button type="button" data-testid="action-signal" onClick=${sendSignal}>
            Send signal
          </button>
        </div>
        ${actions}
      </section>
      <section class="card">
        <h2>Replicas</h2>
        <${Replicas} service=${s} exits=${true} />
      </section>
      <section class="card">
        <h2>Requests and memory</h2>
        <${ServiceChart} service=${s} height=${180} />
      </section>
      <${Log} service=${s.name} replicas=${reps} replica=${logReplica} choose=${setLogReplica} />
      <section class="card">
        <h2>Events</h2>
        <${Events} events=${[...(data.events || [])].reverse()} testid="service-events" />
      </section>
    </article>
  `;
}

const Back = () => html`<p class="back"><a href="#/">← Overview</a></p>`;

function Log({ service, replicas, replica, choose }) {
  const pre = useRef(null);
  const stick = useRef(true); // follow the end unless the reader scrolled up
  const url = (after) =>
    `/api/services/${enc(service)}/log${query({ replica, after, lines: after == null ? 200 : "" })}`;
  const { items, error } = useTail(url, "lines", null, MAX_LOG_LINES, [service, replica]);
  useEffect(() => {
    const el = pre.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [items]);
  const onScroll = (e) => {
    const el = e.currentTarget;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  return html`
    <section class="card">
      <div class="bar">
        <h2>Log</h2>
        ${
          replicas.length > 1 &&
          html`<label>
            replica
            <select
              data-testid="log-replica"
              value=${replica}
              onChange=${(e) => choose(Number(e.currentTarget.value))}
            >
              ${replicas.map((r) => html`<option value=${r.replica}>${service}.${r.replica}</option>`)}
            </select>
          </label>`
        }
      </div>
      ${error && html`<p class="banner error" role="alert">${error}</p>`}
      <pre
        class=${items.length ? "log" : "log empty"}
        data-testid="log"
        ref=${pre}
        onScroll=${onScroll}
        tabindex="0"
      >
${items.join("\n")}</pre>
    </section>
  `;
}

function Events({ events, testid }) {
  if (!events.length) return html`<p class="muted" data-testid=${testid}>No events.</p>`;
  return html`
    <ol class="events" data-testid=${testid}>
      ${events.map(
        (e) =>
          html`<li data-testid="event-row" data-event=${e.event} data-service=${e.service ?? ""}>
            <time datetime=${e.time} title=${e.time}>${when(e.time)}</time>
            <span class=${`kind k-${e.event}`}>${e.event}</span>
            <span class="who">
              ${e.service ? html`<a href=${`#/services/${enc(e.service)}`}>${e.service}${e.replica != null ? `.${e.replica}` : ""}</a>` : "daemon"}
              ${e.pid != null ? ` pid ${e.pid}` : ""}
            </span>
            <span class="detail">${e.detail ?? ""}</span>
          </li>`,
      )}
    </ol>
  `;
}

// == events ==================================================================================

function EventsPage() {
  useTitle("Events");
  const [service, setService] = useState("");
  const [kind, setKind] = useState("");
  const [names, setNames] = useState([]);
  useEffect(() => {
    // the service names for the filter, once: the events poll alone may not show them all
    api("/api/overview").then(
      (o) => setNames(o.services.map((s) => s.name)),
      () => {},
    );
  }, []);
  const url = (after) => `/api/events${query({ service, kind, limit: 200, after })}`;
  const { items, extra, error } = useTail(url, "events", (d) => d.kinds, MAX_EVENTS, [
    service,
    kind,
  ]);
  // each answer names the kinds it read (a poll after an offset: only the new lines'), so
  // the choices gather over the page's life rather than shrink to the last answer's
  const [known, setKnown] = useState([]);
  useEffect(() => {
    if (extra?.length) setKnown((k) => [...new Set([...k, ...extra])]);
  }, [extra]);
  const kinds = [...new Set([...known, kind].filter(Boolean))].sort();
  const services = [
    ...new Set([...names, ...items.map((e) => e.service), service].filter(Boolean)),
  ].sort();
  return html`
    <h1>Events</h1>
    <div class="filters">
      <${Filter}
        label="Service"
        testid="filter-service"
        value=${service}
        set=${setService}
        options=${services}
      />
      <${Filter} label="Kind" testid="filter-kind" value=${kind} set=${setKind} options=${kinds} />
      <span class="muted">newest first, live</span>
    </div>
    ${error && html`<p class="banner error" role="alert">${error}</p>`}
    <section class="card"><${Events} events=${[...items].reverse()} testid="event-list" /></section>
  `;
}

// == jobs ====================================================================================

/** Prometheus-style cumulative buckets as [label, count in this bucket]. */
function histogram(buckets) {
  let before = 0;
  let prevBound = null;
  return (buckets || []).map(([le, total]) => {
    const label = le === "+Inf" ? `>${secs(prevBound)}` : `≤${secs(le)}`;
    const count = total - before;
    before = total;
    prevBound = le;
    return [label.replace(" ", ""), count];
  });
}

function DurationsChart({ durations }) {
  const bars = histogram(durations?.buckets);
  const labels = useRef([]);
  labels.current = bars.map((b) => b[0]);
  const config = () => ({
    scales: {
      x: { time: false, range: () => [-0.5, Math.max(1, labels.current.length) - 0.5] },
      y: { range: fromZero },
    },
    series: [
      { label: "took", value: (u, i) => labels.current[i] ?? NA },
      {
        label: "jobs",
        stroke: themeColour("--c1"),
        fill: themeColour("--c1-fill"),
        paths: window.uPlot.paths.bars({ size: [0.7, 60] }),
        points: { show: false },
        value: orNA((v) => String(v)),
      },
    ],
    axes: [
      axis({
        space: 44,
        incrs: [1, 2, 3, 4, 6],
        grid: { show: false },
        values: (u, vs) => vs.map((i) => labels.current[i] ?? ""),
      }),
      axis({ size: 44, values: (u, vs) => vs.map(compact) }),
    ],
    cursor: { drag: { x: false, y: false } },
  });
  const data = [bars.map((b, i) => i), bars.map((b) => b[1])];
  const n = durations?.count ?? 0;
  return html`
    <${Plot}
      testid="durations-chart"
      data=${data}
      config=${config}
      height=${180}
      label="how long jobs took: a histogram"
    />
    <p class="muted">${n} finished; mean ${n ? secs(durations.sum / n) : NA}</p>
  `;
}

function readJobsHash() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  return {
    status: q.get("status") || "",
    fn: q.get("function") || "",
    queue: q.get("queue") || "",
  };
}

function JobsPage() {
  useTitle("Jobs");
  const initial = useRef(readJobsHash()).current;
  const [status, setStatus] = useState(initial.status);
  const [fnText, setFn] = useState(initial.fn);
  const [queueText, setQueue] = useState(initial.queue);
  const [offset, setOffset] = useState(0);
  const fn = useDebounced(fnText.trim());
  const queue = useDebounced(queueText.trim());
  useEffect(() => {
    // the filters live in the address too, so a reload or a shared link keeps them
    const hash = `#/jobs${query({ status, function: fn, queue })}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }, [status, fn, queue]);
  const filter = (set) => (value) => {
    set(value);
    setOffset(0); // a new filter starts at its first page
  };
  const jobsOverview = useMemo(
    () => historyLoader("/api/jobs/overview", (d) => new Map([["", d.series]])),
    [],
  );
  const [data, error] = usePoll(
    () =>
      Promise.all([
        jobsOverview(),
        api(`/api/jobs${query({ status, function: fn, queue, limit: PAGE, offset })}`),
      ]).then(([overview, list]) => ({ overview, list })),
    [status, fn, queue, offset],
  );
  const o = data?.overview;
  const list = data?.list;
  const count = list?.total ?? 0; // all that match; list.count is this page's
  const first = count ? (list.offset ?? offset) + 1 : 0;
  const last = list ? (list.offset ?? offset) + list.jobs.length : 0;
  return html`
    <h1>Jobs</h1>
    <${Problem} error=${error} data=${data} />
    ${!data && !error && html`<${Loading} />`}
    ${
      o &&
      html`
        <ul class="counts big" aria-label="jobs by status">
          ${STATUSES.map(
            (s) =>
              html`<li>
                <button
                  type="button"
                  class=${`job-count ${status === s ? "on" : ""}`}
                  data-testid="job-count"
                  data-status=${s}
                  aria-pressed=${status === s}
                  onClick=${() => filter(setStatus)(status === s ? "" : s)}
                >
                  <span class=${`state s-${s}`}>${s}</span> <strong>${o.counts?.[s] ?? 0}</strong>
                </button>
              </li>`,
          )}
        </ul>
        <p class="muted">
          ${o.total} jobs · ${o.throughput?.last_10s?.toFixed(2) ?? NA}/s over 10 s ·
          ${" "}${o.throughput?.last_60s?.toFixed(2) ?? NA}/s over 60 s · store: ${o.backend}
        </p>
        <div class="two">
          <section class="card">
            <h2>Throughput and queue depth</h2>
            <${Plot}
              testid="jobs-chart"
              data=${seriesData(o.series, "finished_per_s", "pending")}
              config=${jobsChart}
              height=${180}
              label="jobs finished per second and jobs pending over time"
            />
          </section>
          <section class="card">
            <h2>How long jobs took</h2>
            <${DurationsChart} durations=${o.durations} />
          </section>
        </div>
      `
    }
    <section class="card">
      <div class="filters">
        <${Filter}
          label="Status"
          testid="filter-status"
          value=${status}
          set=${filter(setStatus)}
          options=${STATUSES}
        />
        <label>
          Function
          <input
            type="search"
            data-testid="filter-function"
            value=${fnText}
            placeholder="any"
            onInput=${(e) => filter(setFn)(e.currentTarget.value)}
          />
        </label>
        <label>
          Queue
          <input
            type="search"
            data-testid="filter-queue"
            value=${queueText}
            placeholder="any"
            onInput=${(e) => filter(setQueue)(e.currentTarget.value)}
          />
        </label>
      </div>
      ${list && html`<${JobsTable} jobs=${list.jobs} />`}
      <div class="pager">
        <button
          type="button"
          data-testid="page-prev"
          disabled=${offset === 0}
          onClick=${() => setOffset(Math.max(0, offset - PAGE))}
        >
          ← Previous
        </button>
        <span data-testid="page-info">${`${first}–${last} of ${count}`}</span>
        <button
          type="button"
          data-testid="page-next"
          disabled=${last >= count}
          onClick=${() => setOffset(offset + PAGE)}
        >
          Next →
        </button>
      </div>
    </section>
    ${o && html`<${Schedules} schedules=${o.schedules || []} />`}
  `;
}

// A filter's select: "all" (the empty value) or one of `options`.
function Filter({ label, testid, value, set, options }) {
  return html`<label>
    ${label}
    <select data-testid=${testid} value=${value} onChange=${(e) => set(e.currentTarget.value)}>
      <option value="">all</option>
      ${options.map((o) => html`<option value=${o}>${o}</option>`)}
    </select>
  </label>`;
}

function Head({ cols }) {
  return html`<thead>
    <tr>
      ${cols.map((c) => html`<th scope="col">${c}</th>`)}
    </tr>
  </thead>`;
}

function JobsTable({ jobs }) {
  if (!jobs.length) return html`<p class="muted">No jobs match.</p>`;
  const open = (e, id) => {
    if (!e.target.closest("a")) location.hash = `#/jobs/${id}`;
  };
  return html`
    <div class="table-wrap">
      <table class="jobs">
        <${Head} cols=${["id", "status", "call", "queue", "attempts", "created", "took"]} />
        <tbody>
          ${jobs.map(
            (j) =>
              html`<tr
                data-testid="job-row"
                data-job=${j.job_id}
                class="link"
                onClick=${(e) => open(e, j.job_id)}
              >
                <td class="num"><a href=${`#/jobs/${j.job_id}`}>${j.job_id}</a></td>
                <td><${State} word=${j.status} /></td>
                <td class="call"><code>${callText(j)}</code></td>
                <td>${j.queue}</td>
                <td class="num">${j.attempts}</td>
                <td>
                  <time datetime=${j.init_time} title=${j.init_time}>${when(j.init_time)}</time>
                </td>
                <td class="num">${secs(between(j.started_time, j.finished_time))}</td>
              </tr>`,
          )}
        </tbody>
      </table>
    </div>
  `;
}

function Schedules({ schedules }) {
  return html`
    <section class="card">
      <h2>Schedules</h2>
      ${
        schedules.length
          ? html`<div class="table-wrap">
              <table>
                <${Head} cols=${["name", "function", "when", "next"]} />
                <tbody>
                  ${schedules.map(
                    (s) =>
                      html`<tr data-testid="schedule-row" data-schedule=${s.name}>
                        <th scope="row">${s.name}</th>
                        <td><code>${s.function}</code></td>
                        <td>${s.spec}</td>
                        <td>
                          <time datetime=${s.next} title=${s.next}>${when(s.next)}</time>
                          <span class="muted">${s.next ? relative(s.next) : ""}</span>
                        </td>
                      </tr>`,
                  )}
                </tbody>
              </table>
            </div>`
          : html`<p class="muted">No schedules.</p>`
      }
    </section>
  `;
}

// == one job =================================================================================

function JobPage({ id }) {
  useTitle(`Job ${id}`);
  const [job, error, refresh] = usePoll(() => api(`/api/jobs/${enc(id)}`), []);
  const [ask, actions] = useActions(refresh);
  const back = html`<p class="back"><a href="#/jobs">← Jobs</a></p>`;
  if (!job)
    return html`${back}<${Problem} error=${error} data=${job} />${!error && html`<${Loading} />`}`;
  const post = (verb) => () => api(`/api/jobs/${enc(id)}/${verb}`, {});
  const facts = [
    ["function", html`<code>${job.function}</code>`],
    ["queue", job.queue],
    ["priority", job.priority],
    ["attempts", job.attempts],
    ["worker", job.worker || NA],
    ["created", when(job.init_time)],
    ["run at", job.run_at ? when(job.run_at) : NA],
    ["started", when(job.started_time)],
    ["finished", when(job.finished_time)],
    ["took", secs(between(job.started_time, job.finished_time))],
  ];
  return html`
    ${back}
    <${Problem} error=${error} data=${job} />
    <article class="job-detail" data-testid="job-detail" data-job=${job.job_id}>
      <header class="service-head">
        <h1>Job ${job.job_id}</h1>
        <${State} word=${job.status} field="status" />
      </header>
      <section class="card actions" aria-label="actions">
        <div class="action-row">
          <button
            type="button"
            data-testid="action-requeue"
            onClick=${() => ask(`Requeue job ${job.job_id}`, "Run this failed job again.", post("requeue"))}
          >
            Requeue
          </button>
          <button
            type="button"
            data-testid="action-cancel"
            onClick=${() => ask(`Cancel job ${job.job_id}`, "It will not run (again).", post("cancel"))}
          >
            Cancel job
          </button>
        </div>
        ${actions}
      </section>
      <div class="two">
        <section class="card">
          <h2>Details</h2>
          <dl class="facts">
            ${facts.map(
              ([k, v]) =>
                html`<dt>${k}</dt>
                  <dd>${v}</dd>`,
            )}
          </dl>
          ${
            job.progress != null &&
            html`<p class="progress">
              <label
                >Progress
                <progress max="1" value=${job.progress}></progress>
                ${Math.round(job.progress * 100)}%</label
              >
            </p>`
          }
          ${
            job.depends_on?.length > 0 &&
            html`<p>
              Depends on:
              ${job.depends_on.map((d) => html` <a data-testid="dependency" href=${`#/jobs/${d}`}>#${d}</a>`)}
            </p>`
          }
        </section>
        <section class="card">
          <h2>Call</h2>
          <h3>args</h3>
          <pre data-field="args">${pretty(job.args)}</pre>
          <h3>kwargs</h3>
          <pre data-field="kwargs">${pretty(job.kwargs)}</pre>
          ${
            job.meta != null &&
            html`<h3>meta</h3>
              <pre data-field="meta">${pretty(job.meta)}</pre>`
          }
          <h3>result</h3>
          <pre data-field="result">${pretty(job.result)}</pre>
        </section>
      </div>
      ${
        job.error &&
        html`<section class="card">
          <h2>Error</h2>
          <pre class="error" data-field="error">${job.error}</pre>
        </section>`
      }
      ${
        job.errors?.length > 0 &&
        html`<section class="card">
          <h2>Failed attempts</h2>
          <ol class="attempts">
            ${job.errors.map(
              (a) =>
                html`<li data-testid="attempt" data-attempt=${a.attempt}>
                  <p>
                    <strong>Attempt ${a.attempt}</strong>
                    <span class="muted">${a.at != null ? when(a.at) : ""}</span>
                  </p>
                  <pre class="error">${a.error}</pre>
                </li>`,
            )}
          </ol>
        </section>`
      }
    </article>
  `;
}

// == the shell ===============================================================================

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return (hash.replace(/^#/, "") || "/").split("?")[0];
}

function App() {
  const path = useRoute();
  let m;
  let page;
  let section = "";
  if (path === "/") {
    page = html`<${Overview} />`;
    section = "overview";
  } else if ((m = path.match(/^\/services\/([^/]+)$/))) {
    const name = decodeURIComponent(m[1]);
    page = html`<${ServicePage} key=${name} name=${name} />`;
    section = "overview";
  } else if (path === "/jobs") {
    page = html`<${JobsPage} />`;
    section = "jobs";
  } else if ((m = path.match(/^\/jobs\/([^/]+)$/))) {
    page = html`<${JobPage} key=${m[1]} id=${decodeURIComponent(m[1])} />`;
    section = "jobs";
  } else if (path === "/events") {
    page = html`<${EventsPage} />`;
    section = "events";
  } else {
    page = html`<p>No page here. <a href="#/">Go to the overview.</a></p>`;
  }
  const link = (id, href, text) =>
    html`<a
      data-testid=${`nav-${id}`}
      href=${href}
      aria-current=${section === id ? "page" : undefined}
      >${text}</a
    >`;
  return html`
    <header class="top-bar">
      <a class="brand" href="#/">procorch</a>
      <nav aria-label="pages">
        ${link("overview", "#/", "Overview")} ${link("jobs", "#/jobs", "Jobs")}
        ${link("events", "#/events", "Events")}
      </nav>
    </header>
    <main>${page}</main>
  `;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading" note: render() would keep it
render(html`<${App} />`, root);
