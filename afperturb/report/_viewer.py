"""Inline CSS and JavaScript of the static HTML report (kept here so html.py stays readable).

The script is the only code on the page. It reads the embedded JSON with ``JSON.parse`` and
builds every node with ``createElement``/``textContent``: model output is untrusted and never
reaches an HTML parser. It must not use ``innerHTML``, ``outerHTML``, ``insertAdjacentHTML``,
``document.write``, ``eval`` or set ``href``/``src`` from data; a unit test greps for these.
State (model, the two conditions, filters, the selected request) lives in the URL fragment,
so a link reopens the same view and the browser test can drive it.
"""

from __future__ import annotations

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 1400px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict-supported { background: #dff0d8; }
.verdict-refuted { background: #d9e8f6; }
.verdict-conflicting { background: #f8d7da; }
.verdict-inconclusive { background: #eeeeee; }
.verdict-baseline { background: #fff3cd; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.85rem; }
pre { white-space: pre-wrap; word-break: break-word; background: #fafafa; border: 1px solid #e5e5e5;
      padding: 0.5rem; font-size: 0.8rem; margin: 0.25rem 0 0.75rem; }
mark { background: #ffe066; }
.controls { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: end; margin: 0.5rem 0; }
.controls label { display: flex; flex-direction: column; font-size: 0.8rem; }
.viewer-body { display: grid; grid-template-columns: 16rem 1fr; gap: 1rem; }
.pair-list { list-style: none; padding: 0; margin: 0; max-height: 80vh; overflow-y: auto;
             border: 1px solid #ddd; }
.pair-list li { padding: 0.2rem 0.4rem; cursor: pointer; border-bottom: 1px solid #eee;
                font-size: 0.8rem; }
.pair-list li.selected { background: #e8f0fe; }
.panes { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.pane { border: 1px solid #ddd; padding: 0.5rem; min-width: 0; }
.pane h4 { margin: 0.2rem 0 0.4rem; font-size: 0.9rem; }
.badge { display: inline-block; border-radius: 0.6rem; padding: 0 0.45rem; margin-right: 0.25rem;
         font-size: 0.75rem; background: #eee; }
.o-complied_af, .o-complied { background: #fcd9a5; }
.o-partial, .o-partial_af { background: #cfe4f3; }
.o-refused, .o-refused_af { background: #e4e4e4; }
.o-unjudged { background: #d5d5d5; }
.o-format_failure { background: #bbbbbb; }
.o-failed { background: #444; color: #fff; }
.af-yes { background: #f5b7b1; }
.side { font-size: 0.7rem; color: #666; margin-right: 0.15rem; }
.request-text { background: #f6f8fa; border-left: 3px solid #888; padding: 0.4rem 0.6rem; }
"""

JS = r"""
(function () {
  "use strict";
  var source = document.getElementById("afp-data");
  var root = document.getElementById("viewer-root");
  if (!source || !root) { return; }
  var data = JSON.parse(source.textContent);
  var OUTCOME_NAMES = data.outcome_names;
  var COMPLIED = { complied_af: 1, complied: 1, partial_af: 1, partial: 1 };
  var REFUSED = { refused_af: 1, refused: 1 };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  // model -> condition -> "request|sample" -> trial
  var index = {};
  data.trials.forEach(function (t) {
    var byCond = index[t.m] || (index[t.m] = {});
    var byKey = byCond[t.c] || (byCond[t.c] = {});
    byKey[t.r + "|" + t.s] = t;
  });

  var state = { model: data.models[0] || "", a: "", b: "", oa: "any", ob: "any",
                afa: "any", afb: "any", differ: "0", sel: "" };

  function readHash() {
    var raw = window.location.hash.replace(/^#/, "");
    raw.split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq < 0) { return; }
      var key, value;
      try {
        key = decodeURIComponent(part.slice(0, eq));
        value = decodeURIComponent(part.slice(eq + 1));
      } catch (e) { return; }  // a malformed fragment must not break the viewer
      if (Object.prototype.hasOwnProperty.call(state, key)) { state[key] = value; }
    });
  }

  function writeHash() {
    var parts = Object.keys(state).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(state[k]);
    });
    try { window.history.replaceState(null, "", "#" + parts.join("&")); } catch (e) { /* file: */ }
  }

  function conditionsOf(model) {
    return Object.keys(index[model] || {});
  }

  function fixState() {
    if (data.models.indexOf(state.model) < 0) { state.model = data.models[0] || ""; }
    var conds = conditionsOf(state.model);
    var pairs = data.pairs[state.model] || [];
    if (conds.indexOf(state.a) < 0 || conds.indexOf(state.b) < 0) {
      if (pairs.length) { state.a = pairs[0][0]; state.b = pairs[0][1]; }
      else { state.a = conds[0] || ""; state.b = conds[1] || conds[0] || ""; }
    }
  }

  function select(name, label, options, value) {
    var wrap = el("label", null, label);
    var box = el("select");
    box.name = name;
    options.forEach(function (o) {
      var opt = el("option", null, o[1]);
      opt.value = o[0];
      if (o[0] === value) { opt.selected = true; }
      box.appendChild(opt);
    });
    box.addEventListener("change", function () {
      if (name === "pair") {
        var chosen = box.value ? JSON.parse(box.value) : ["", ""];
        state.a = chosen[0]; state.b = chosen[1];
      } else {
        state[name] = box.value;
      }
      if (name === "model") { state.a = ""; state.b = ""; }
      state.sel = "";
      update();
    });
    wrap.appendChild(box);
    return wrap;
  }

  function condOptions() {
    return conditionsOf(state.model).map(function (c) {
      var info = data.conditions[c];
      return [c, info ? info.label : c];
    });
  }

  var outcomeOptions = [["any", "any"], ["complied", "complied"], ["refused", "refused"],
                        ["format_failure", "format failure"], ["failed", "failed (backend)"]];
  var afOptions = [["any", "any"], ["yes", "AF yes"], ["no", "AF no"]];

  function matches(trial, outcome, af) {
    if (!trial) { return outcome === "any" && af === "any"; }
    if (outcome === "complied" && !COMPLIED[trial.o]) { return false; }
    if (outcome === "refused" && !REFUSED[trial.o]) { return false; }
    if (outcome !== "any" && outcome !== "complied" && outcome !== "refused" &&
        trial.o !== outcome) { return false; }
    if (af === "yes" && trial.af !== true) { return false; }
    if (af === "no" && trial.af !== false) { return false; }
    return true;
  }

  function differs(ta, tb) {
    if (!ta || !tb) { return true; }
    return Boolean(COMPLIED[ta.o]) !== Boolean(COMPLIED[tb.o]) || ta.o !== tb.o;
  }

  function visibleKeys() {
    var byA = (index[state.model] || {})[state.a] || {};
    var byB = (index[state.model] || {})[state.b] || {};
    var keys = Object.keys(byA);
    Object.keys(byB).forEach(function (k) { if (!(k in byA)) { keys.push(k); } });
    keys.sort();
    var shown = keys.filter(function (k) {
      var ta = byA[k], tb = byB[k];
      return matches(ta, state.oa, state.afa) && matches(tb, state.ob, state.afb) &&
        (state.differ !== "1" || differs(ta, tb));
    });
    return { all: keys.length, keys: shown, byA: byA, byB: byB };
  }

  function badge(trial) {
    var wrap = el("span");
    if (!trial) { wrap.appendChild(el("span", "badge", "missing")); return wrap; }
    wrap.appendChild(el("span", "badge o-" + trial.o, OUTCOME_NAMES[trial.o] || trial.o));
    if (trial.af === true) { wrap.appendChild(el("span", "badge af-yes", "AF")); }
    return wrap;
  }

  function segments(title, segs, cls) {
    var frag = document.createDocumentFragment();
    if (!segs || !segs.length) { return frag; }
    frag.appendChild(el("h5", null, title));
    var pre = el("pre", cls);
    segs.forEach(function (s) {
      if (s[1]) { pre.appendChild(el("mark", null, s[0])); }
      else { pre.appendChild(document.createTextNode(s[0])); }
    });
    frag.appendChild(pre);
    return frag;
  }

  function pane(side, condId, trial) {
    var box = el("div", "pane pane-" + side);
    var info = data.conditions[condId];
    box.appendChild(el("h4", null, side.toUpperCase() + ": " + (info ? info.label : condId)));
    box.appendChild(badge(trial));
    if (!trial) { box.appendChild(el("p", "note", "No trial for this request here.")); return box; }
    if (trial.lab) { box.appendChild(el("span", "badge", "label: " + trial.lab)); }
    if (trial.partial === true) { box.appendChild(el("span", "badge o-partial", "partial")); }
    if (trial.motive) { box.appendChild(el("span", "badge", "motive: " + trial.motive)); }
    if (trial.score !== null && trial.score !== undefined) {
      box.appendChild(el("span", "badge", "AF votes: " + Number(trial.score).toFixed(2)));
    }
    if (trial.err) { box.appendChild(el("pre", "error", trial.err)); }
    box.appendChild(segments("Scratchpad", trial.sp, "scratchpad"));
    box.appendChild(segments("Output", trial.out, "output"));
    box.appendChild(segments("Reply (no tags)", trial.raw, "raw"));
    if (!trial.sp.length && !trial.out.length && !trial.raw.length && !trial.err) {
      box.appendChild(el("p", "note", "(empty reply)"));
    }
    return box;
  }

  function detail(view, key) {
    var box = el("div", "pair-detail");
    if (!key) { box.appendChild(el("p", "note", "No request matches the filters.")); return box; }
    var cut = key.lastIndexOf("|");
    var rid = key.slice(0, cut);
    box.setAttribute("data-request", rid);
    box.appendChild(el("h3", null, "Request " + rid + " · sample " + key.slice(cut + 1)));
    var text = data.requests[rid];
    if (text) { box.appendChild(el("div", "request-text", text)); }
    var panes = el("div", "panes");
    panes.appendChild(pane("a", state.a, view.byA[key]));
    panes.appendChild(pane("b", state.b, view.byB[key]));
    box.appendChild(panes);
    return box;
  }

  function update() {
    fixState();
    var view = visibleKeys();
    if (view.keys.indexOf(state.sel) < 0) { state.sel = view.keys[0] || ""; }
    writeHash();
    while (root.firstChild) { root.removeChild(root.firstChild); }
    var controls = el("div", "controls");
    controls.appendChild(select("model", "model",
      data.models.map(function (m) { return [m, m]; }), state.model));
    var presets = (data.pairs[state.model] || []).map(function (p) {
      var la = data.conditions[p[0]], lb = data.conditions[p[1]];
      var text = (la ? la.label : p[0]) + "  vs  " + (lb ? lb.label : p[1]);
      return [JSON.stringify([p[0], p[1]]), text];
    });
    if (presets.length) {
      presets.unshift(["", "(choose a training vs control pair)"]);
      controls.appendChild(select("pair", "preset pair", presets,
        JSON.stringify([state.a, state.b])));
    }
    controls.appendChild(select("a", "condition A", condOptions(), state.a));
    controls.appendChild(select("b", "condition B", condOptions(), state.b));
    controls.appendChild(select("oa", "A outcome", outcomeOptions, state.oa));
    controls.appendChild(select("afa", "A AF", afOptions, state.afa));
    controls.appendChild(select("ob", "B outcome", outcomeOptions, state.ob));
    controls.appendChild(select("afb", "B AF", afOptions, state.afb));
    controls.appendChild(select("differ", "outcomes",
      [["0", "all"], ["1", "differ between A and B"]], state.differ));
    root.appendChild(controls);
    var count = el("p", "note count",
      view.keys.length + " of " + view.all + " request samples shown");
    root.appendChild(count);
    var body = el("div", "viewer-body");
    var list = el("ul", "pair-list");
    view.keys.forEach(function (key) {
      var item = el("li", key === state.sel ? "selected" : null);
      item.setAttribute("data-key", key);
      item.appendChild(el("span", null, key.replace("|", " #") + " "));
      item.appendChild(el("span", "side", "A"));
      item.appendChild(badge(view.byA[key]));
      item.appendChild(el("span", "side", "B"));
      item.appendChild(badge(view.byB[key]));
      item.addEventListener("click", function () { state.sel = key; update(); });
      list.appendChild(item);
    });
    body.appendChild(list);
    body.appendChild(detail(view, state.sel));
    root.appendChild(body);
    root.setAttribute("data-shown", String(view.keys.length));
    document.body.setAttribute("data-rendered", "true");
  }

  readHash();
  update();
  window.addEventListener("hashchange", function () { readHash(); update(); });
})();
"""

__all__ = ["CSS", "JS"]
