// ucupdates Control Panel: the rollout pages (staged approvals, pins, networks and their
// download windows, upgrade paths), over the JSON API with app.js's tools.
// Every value from the server goes into the page as text, never as HTML.
"use strict";

(function () {
  const U = window.ucupdates;
  if (!U) return;
  const { $, $$, api, el, dash, when, badge, fillTable, toast, confirmDialog, isAdmin } = U;
  const OUTCOMES = ["pending", "updated", "stuck", "reverted", "silent"];
  const pct = (n) => `${Number(n).toLocaleString("en", { maximumFractionDigits: 2 })} %`;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many || one + "s"}`;

  // The rule a staging or count names, as the Updates page writes it.
  function ruleText(rule, id) {
    return rule ? `rule ${id} ${rule}` : `rule ${id}`;
  }

  // A confirmation that needs a reason (a pause): the OK button waits for one, and Enter
  // in the field confirms rather than cancelling.
  async function confirmWithReason(title, summary, details, okLabel) {
    const box = $("#confirm-reason-box");
    const reason = $("#confirm-reason");
    const ok = $("#confirm-ok");
    box.hidden = false;
    reason.value = "";
    reason.setAttribute("required", "");
    const asked = confirmDialog(title, summary, details, okLabel, false);
    reason.focus();
    reason.oninput = () => { ok.disabled = reason.value.trim() === ""; };
    reason.onkeydown = (e) => {
      if (e.key !== "Enter") return;
      e.preventDefault();
      if (!ok.disabled) ok.click();
    };
    const confirmed = await asked;
    box.hidden = true;
    reason.oninput = reason.onkeydown = null;
    return confirmed ? reason.value.trim() : null;
  }

  function removeButton(label, what, onConfirm) {
    if (!isAdmin()) return null;
    return el("button", {
      type: "button", class: "danger", text: "Remove…", "aria-label": label,
      onclick: async () => {
        const [title, summary, details] = what();
        if (!(await confirmDialog(title, summary, details, "Remove", true))) return;
        await onConfirm();
      },
    });
  }

  async function send(method, path, body, done) {
    try {
      const result = await api(method, path, body);
      if (done) toast(done);
      return result || true;
    } catch (e) { toast(e.message, true); return null; }
  }

  // A form's fields that are not empty, numbers as numbers.
  function fields(form) {
    const out = {};
    for (const input of $$("input[name]:not([type=radio])", form)) {
      const v = input.value.trim();
      if (v === "") continue;
      out[input.name] = input.type === "number" ? Number(v) : v;
    }
    for (const radio of $$("input[type=radio]:checked", form)) out[radio.name] = radio.value;
    return out;
  }

  function windowsOf(values) {
    const text = values.windows || "";
    delete values.windows;
    return { ...values, windows: text.split(/[,;\s]+/).filter((w) => w) };
  }

  function timeZones() {
    const list = $("#time-zones");
    if (!list || list.children.length) return;
    const zones = (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : []).concat(["UTC"]);
    list.replaceChildren(...[...new Set(zones)].map((z) => el("option", { value: z })));
  }

  function formError(form, box, message) {
    $(box).textContent = message;
    if (message) $("input:not([type=radio])", form).focus();
  }

  // -- staged approvals ---------------------------------------------------------------------

  function stagesCell(r) {
    const cell = el("td", { "aria-label": `stage ${r.stage + 1} of ${r.stages.length}: ${pct(r.share)}` });
    r.stages.forEach((s, i) => {
      if (i) cell.append(" → ");
      cell.append(i === r.stage ? el("strong", { text: pct(s) }) : pct(s));
    });
    return cell;
  }

  // Running, paused (and why), or superseded; and what the stage timer does next.
  function stateCell(r) {
    const next = r.next && r.next.why ? el("span", { class: "hint-inline", text: ` ${r.next.why}` }) : null;
    if (r.current === false) return el("td", { class: "wrap" }, badge("superseded"), next);
    if (r.paused) {
      return el("td", { class: "wrap" }, badge("paused"), ` ${r.paused_why || "no reason given"}`,
        r.paused_at ? ` (since ${when(r.paused_at)})` : "");
    }
    return el("td", { class: "wrap" }, badge("running"), next);
  }

  function rolloutActions(r, reload) {
    if (!isAdmin()) return el("td");
    const name = ruleText(r.rule, r.rule_id);
    const stop = el("button", {
      type: "button", class: "danger", text: r.current === false ? "Remove…" : "Stop staging…", "aria-label": `Stop staging ${name}`,
      onclick: async () => {
        const ok = await confirmDialog(`Stop staging ${name}?`,
          r.current === false
            ? `The rule's approved version is another one now: this staging of ${r.version} holds nobody back, and goes.`
            : `Every device of the rule will be offered ${r.version} at its next check, as after a plain approval; the stages and their pauses go.`,
          [], "Stop staging", true);
        if (ok && await send("DELETE", `/api/rollouts/${r.rule_id}`, undefined, `${name}: staging removed`)) reload();
      },
    });
    if (r.current === false) return el("td", { class: "buttons" }, stop);
    const previous = r.restore_version ? `keep ${r.restore_version}` : "are offered nothing for this rule";
    const last = r.stage + 1 >= r.stages.length;
    const health = r.health || {};
    const failing = (health.stuck || 0) + (health.reverted || 0) + (health.silent || 0);
    const healthLine = `So far ${plural(health.offered || 0, "device was", "devices were")} offered ${r.version}: `
      + `${health.updated || 0} updated, ${health.stuck || 0} stuck, ${health.reverted || 0} reverted, ${health.silent || 0} silent.`;
    const advance = el("button", {
      type: "button", text: "Advance…", disabled: r.paused || last, "aria-label": `Advance ${name}`,
      onclick: async () => {
        const next = r.stages[r.stage + 1];
        const ok = await confirmDialog(`Advance ${name} to ${pct(next)}?`,
          `${r.version} will be offered to ${pct(next)} of the devices (now ${pct(r.share)}) at their next check.`,
          [`Devices outside the stage ${previous}.`, healthLine, ...(failing ? [`${failing} failing: look at them first.`] : [])],
          "Advance", true);
        if (ok && await send("POST", `/api/rollouts/${r.rule_id}/advance`, {}, `${name} advanced to ${pct(next)}`)) reload();
      },
    });
    const toggle = r.paused
      ? el("button", {
        type: "button", text: "Resume…", "aria-label": `Resume ${name}`,
        onclick: async () => {
          const ok = await confirmDialog(`Resume ${name}?`,
            `Devices in the stage (${pct(r.share)}) that do not run ${r.version} yet will be offered it at their next check; the stage's soak time starts again.`,
            [`It was paused: ${r.paused_why || "no reason given"}.`, healthLine], "Resume", true);
          if (ok && await send("POST", `/api/rollouts/${r.rule_id}/resume`, {}, `${name} resumed`)) reload();
        },
      })
      : el("button", {
        type: "button", text: "Pause…", "aria-label": `Pause ${name}`,
        onclick: async () => {
          const reason = await confirmWithReason(`Pause ${name}?`,
            `No device will be newly offered ${r.version}; those that run it stay on it, and the others ${previous}.`,
            [healthLine, "Resume later, or restore the rule to roll it back."], "Pause");
          if (reason && await send("POST", `/api/rollouts/${r.rule_id}/pause`, { reason }, `${name} paused`)) reload();
        },
      });
    return el("td", { class: "buttons" }, advance, toggle, stop);
  }

  function confirmationRows(counts, names) {
    const rows = new Map();
    for (const c of counts) {
      const key = `${c.rule_id} ${c.version} ${c.stage}`;
      if (!rows.has(key)) rows.set(key, { rule_id: c.rule_id, version: c.version, stage: c.stage, counts: {} });
      rows.get(key).counts[c.outcome] = (rows.get(key).counts[c.outcome] || 0) + c.devices;
    }
    return [...rows.values()].map((r) => el("tr", {},
      el("td", { text: names.get(r.rule_id) || `rule ${r.rule_id}` }), el("td", { text: r.version }),
      el("td", { text: r.stage === null || r.stage === undefined ? "–" : `stage ${r.stage + 1}` }),
      ...OUTCOMES.map((o) => el("td", { class: "num", text: r.counts[o] || 0 }))));
  }

  // How many of the rule's known devices the stage holds (when the view says), and what
  // they are all answered now, by reason: served, up to date, or waiting for the stage.
  function devicesCell(r) {
    const answers = r.answers || {};
    const now = Object.entries(answers).map(([k, n]) => `${n} ${k}`).join(", ");
    return el("td", { class: "wrap narrow" },
      r.devices ? `${r.devices.in_stage} of ${r.devices.known}` : "–",
      now ? el("span", { class: "hint-inline", text: ` (answered now: ${now})` }) : null);
  }

  function setupRollouts() {
    async function load() {
      let data;
      try { data = await api("GET", "/api/rollouts"); } catch (e) { toast(e.message, true); return; }
      // each rollout's answers now (what waits for the stage or a window) comes with its own view
      const views = await Promise.all(data.rollouts.map((r) => api("GET", `/api/rollouts/${r.rule_id}`).catch(() => r)));
      const counts = await api("GET", "/api/offer-counts").then((d) => d.counts, () => null);
      const names = new Map();
      views.forEach((r) => names.set(r.rule_id, ruleText(r.rule, r.rule_id)));
      $("#rollouts-count").textContent = `(${views.length})`;
      fillTable($("#rollouts"), views.map((r) => {
        const h = r.health || {};
        const waiting = r.answers ? r.answers["outside-window"] || 0 : null;
        return el("tr", { "data-rule": r.rule_id, class: r.paused ? "paused" : "" },
          el("td", { class: "rule" }, el("span", { class: "id", text: `rule ${r.rule_id} ` }), dash(r.rule)),
          el("td", { class: "wrap narrow", text: `${dash(r.restore_version)} → ${r.version}` }),
          stagesCell(r), devicesCell(r),
          ...["updated", "stuck", "reverted", "silent"].map((o) => el("td", { class: "num" + (o !== "updated" && h[o] ? " failing" : ""), text: dash(h[o]) })),
          el("td", { class: "num", text: dash(waiting) }),
          stateCell(r), rolloutActions(r, load));
      }), "No staged approval. Approve a rule as Staged on the Updates page.");
      if (counts === null) {
        fillTable($("#confirmations"), [], "The counts could not be read.");
        return;
      }
      $("#confirmations-count").textContent = `(${counts.reduce((n, c) => n + c.devices, 0)} devices)`;
      fillTable($("#confirmations"), confirmationRows(counts, names), "No device has been offered an update yet.");
    }
    $("#refresh-rollouts").addEventListener("click", load);
    load();
  }

  // -- pins -----------------------------------------------------------------------------------

  function setupPins() {
    async function load() {
      let data;
      try { data = await api("GET", "/api/pins"); } catch (e) { toast(e.message, true); return; }
      $("#pins-count").textContent = `(${data.pins.length})`;
      fillTable($("#pins"), data.pins.map((p) => {
        const device = `${p.kind === "mac" ? "MAC" : "serial"} ${p.identifier}`;
        const pin = p.action === "hold" ? `held on ${p.version}` : "excluded";
        const which = { [p.kind]: p.identifier, update_type: p.update_type };
        return el("tr", {},
          el("td", { text: device }), el("td", {}, badge(p.action), " ", pin),
          el("td", { text: p.update_type || "every type" }), el("td", { class: "wrap", text: p.reason }),
          el("td", { text: p.set_by }), el("td", { text: when(p.set_at) }),
          el("td", {}, removeButton(`Remove the pin of ${device}`, () => [`Remove the pin of ${device}?`,
            `${device} will be offered what the rules approve for it again, from its next check.`,
            [`It is ${pin}: ${p.reason}`]],
          async () => { if (await send("POST", "/api/pins/remove", which, `Removed the pin of ${device}`)) load(); })));
      }), "No device is pinned.");
    }
    const form = $("#add-pin");
    if (form) {
      const sync = () => {
        const kind = $("input[name=kind]:checked", form).value;
        $("label[for=pin-id]").textContent = kind === "mac" ? "MAC address" : "Serial number";
        $("#pin-id-hint").textContent = kind === "mac" ? "For example 00-04-F2-A1-B2-C3" : "1 to 64 letters, digits, - or _";
        const hold = $("input[name=action]:checked", form).value === "hold";
        $("#pin-version").closest("p").hidden = !hold;
        $("#pin-version").required = hold;
      };
      $$("input[type=radio]", form).forEach((r) => r.addEventListener("change", sync));
      sync();
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const v = fields(form);
        if (!v.identifier || !v.reason || (v.action === "hold" && !v.version)) {
          formError(form, "#pin-error", "Give the device, the reason and, to hold it, the version.");
          return;
        }
        const body = { action: v.action, reason: v.reason, update_type: v.update_type || null };
        body[v.kind] = v.identifier;
        if (v.action === "hold") body.version = v.version;
        try {
          await api("POST", "/api/pins", body);
          toast(`Pinned ${v.identifier}`);
          form.reset();
          sync();
          formError(form, "#pin-error", "");
        } catch (e) { formError(form, "#pin-error", e.message); }
        load();
      });
    }
    load();
  }

  // -- networks and windows --------------------------------------------------------------------

  const windowsText = (p) => (p.windows && p.windows.length ? p.windows.join(", ") : "always open");
  const cap = (n) => (n === null || n === undefined ? "no cap" : String(n));

  function setupNetworks() {
    timeZones();
    async function load() {
      let data;
      try {
        data = await api("GET", "/api/networks");
        data.external = (await api("GET", "/api/external-policy")).external;
      } catch (e) { toast(e.message, true); return; }
      $("#networks-count").textContent = `(${data.networks.length})`;
      fillTable($("#networks"), data.networks.map((n) => el("tr", {},
        el("td", { text: n.network }), el("td", { text: dash(n.time_zone) }), el("td", { text: windowsText(n) }),
        el("td", { class: "num", text: cap(n.max_downloads) }), el("td", { class: "num", text: cap(n.max_bytes_per_second) }),
        el("td", { text: n.set_by }), el("td", { text: when(n.set_at) }),
        el("td", {}, removeButton(`Remove network ${n.network}`, () => [`Remove network ${n.network}?`,
          `Phones in ${n.network} will follow the next wider listed network, or be offered downloads at any hour if none holds them.`,
          [`Its windows now: ${windowsText(n)} (${dash(n.time_zone)}).`]],
        async () => { if (await send("DELETE", `/api/networks/${encodeURIComponent(n.network)}`, undefined, `Removed ${n.network}`)) load(); })))),
      "No network is listed: phones may download at any hour.");
      const x = data.external;
      const most = (n, what) => (n === null || n === undefined ? `no cap on ${what}` : `at most ${n} ${what}`);
      $("#external-policy").textContent = x
        ? `External phones download ${x.windows && x.windows.length ? `only ${windowsText(x)} (${x.time_zone})` : "at any hour"}; `
          + `${most(x.max_downloads, "downloads at once")}, ${most(x.max_bytes_per_second, "bytes a second")}. Set by ${x.set_by} at ${when(x.set_at)}.`
        : "External phones have no policy of their own: they may download at any hour, with no cap.";
      const clear = $("#ext-clear");
      if (clear) clear.disabled = !x;
    }
    const form = $("#add-network");
    if (form) form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = windowsOf(fields(form));
      if (!body.network || !body.time_zone) { formError(form, "#net-error", "Give the network and its time zone."); return; }
      try {
        await api("POST", "/api/networks", body);
        toast(`Added ${body.network}`);
        form.reset();
        formError(form, "#net-error", "");
      } catch (e) { formError(form, "#net-error", e.message); }
      load();
    });
    const external = $("#external-form");
    if (external) {
      external.addEventListener("submit", async (event) => {
        event.preventDefault();
        const body = windowsOf(fields(external));
        try {
          await api("POST", "/api/external-policy", body);
          toast("External phones' policy set");
          formError(external, "#ext-error", "");
        } catch (e) { formError(external, "#ext-error", e.message); }
        load();
      });
      $("#ext-clear").addEventListener("click", async () => {
        const ok = await confirmDialog("Clear the external zone's policy?",
          "External phones will be offered downloads at any hour, with no cap.", [], "Clear", true);
        if (ok && await send("DELETE", "/api/external-policy", undefined, "External phones' policy cleared")) load();
      });
    }
    load();
  }

  // -- upgrade paths ---------------------------------------------------------------------------

  function setupUpgradePaths() {
    async function load() {
      let data;
      try { data = await api("GET", "/api/upgrade-paths"); } catch (e) { toast(e.message, true); return; }
      $("#upgrade-paths-count").textContent = `(${data.paths.length})`;
      fillTable($("#upgrade-paths"), data.paths.map((s) => {
        const model = [s.device_type, s.brand, s.model, s.revision].filter((v) => v).join("/");
        const step = `${model}${s.update_type ? " " + s.update_type : ""} below ${s.below}`;
        const key = { device_type: s.device_type, brand: s.brand, model: s.model, revision: s.revision, update_type: s.update_type, below: s.below };
        return el("tr", {},
          el("td", { text: model }), el("td", { text: s.update_type || "every type" }), el("td", { text: s.below }),
          el("td", { text: s.offer }), el("td", { text: s.set_by }), el("td", { text: when(s.set_at) }),
          el("td", {}, removeButton(`Remove the step ${step}`, () => [`Remove the upgrade step ${step}?`,
            `Phones of ${model} reporting a version below ${s.below} will no longer be offered ${s.offer} first: they get the approved version directly, or the next step that applies.`, []],
          async () => { if (await send("POST", "/api/upgrade-paths/remove", key, `Removed the step ${step}`)) load(); })));
      }), "No upgrade path: every phone is offered the approved version directly.");
    }
    const form = $("#add-path");
    if (form) {
      api("GET", "/api/rules").then((d) => {
        $("#path-brands").replaceChildren(...d.choices.brand.map((v) => el("option", { value: v })));
        $("#path-models").replaceChildren(...d.choices.model.map((v) => el("option", { value: v })));
      }).catch(() => {});
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const body = fields(form);
        if (!body.device_type || !body.brand || !body.model || !body.below || !body.offer) {
          formError(form, "#path-error", "Give the model, the threshold and the version to offer first.");
          return;
        }
        try {
          await api("POST", "/api/upgrade-paths", body);
          toast(`Added: ${body.model} below ${body.below} first takes ${body.offer}`);
          form.reset();
          formError(form, "#path-error", "");
        } catch (e) { formError(form, "#path-error", e.message); }
        load();
      });
    }
    load();
  }

  // -- a device: what it gets now and why, and what it was offered ---------------------------

  function explainLines(x) {
    const lines = x.rules.map((r) => {
      const path = r.path && r.path.length > 1 ? `; path ${r.path.join(" → ")}` : "";
      const stage = r.stage ? `; stage ${r.stage.stage + 1} (${pct(r.stage.share)}), ${r.stage.in_stage ? "in it" : "not in it"}${r.stage.paused ? ", paused" : ""}` : "";
      return `rule ${r.rule_id} ${r.rule}: ${r.reason}${r.target ? `, to ${r.target}` : ""}${path}${stage}`;
    });
    if (x.window) lines.push(`Download window: ${x.window.label || x.window.network}: ${x.window.open ? "open now" : "shut now"}`);
    else lines.push("No download window applies to it.");
    x.pins.forEach((p) => lines.push(`Pinned: ${p.action === "hold" ? `held on ${p.version}` : "excluded"}${p.update_type ? ` (${p.update_type})` : ""}: ${p.reason}`));
    if (x.bucket !== null && x.bucket !== undefined) lines.push(`Bucket ${x.bucket} of 10,000 (the stages take the lowest buckets first).`);
    return lines;
  }

  async function deviceDetail(d) {
    const name = d.mac || (d.serial ? "serial " + d.serial : d.identity);
    const params = {
      device_type: d.device_type, brand: d.brand, model: d.model, revision: d.revision, locale: d.locale,
      mac: d.mac, serial: d.serial, reported_version: d.version, address: d.address, zone: d.zone,
    };
    const box = $("#device-detail");
    $("#device-detail-title").textContent = `${name}: ${dash(d.brand)} ${dash(d.model)} ${dash(d.locale)}, runs ${dash(d.version)}`;
    try {
      const [x, offers] = await Promise.all([
        api("GET", "/api/explain" + U.query(params)),
        d.mac || d.serial ? api("GET", "/api/offers" + U.query({ device: d.mac || d.serial, limit: 100 })).then((o) => o.offers) : [],
      ]);
      $("#device-now").textContent = `Now: ${x.reason}${x.offers.length ? `, offered ${x.offers.map((o) => o.version).join(", ")}` : ""}. ${x.detail || ""}`;
      $("#device-explain").replaceChildren(...explainLines(x).map((l) => el("li", { text: l })));
      $("#device-offers-count").textContent = `(${offers.length})`;
      fillTable($("#device-offers"), offers.map((o) => el("tr", {},
        el("td", { text: o.rule ? `rule ${o.rule_id} ${o.rule}` : `rule ${o.rule_id}` }), el("td", { text: o.version }),
        el("td", { text: dash(o.from_version) }), el("td", { text: when(o.first_offered_at) }),
        el("td", { text: when(o.last_offered_at) }), el("td", { class: "num", text: o.offers }),
        el("td", {}, badge(o.outcome)), el("td", { text: dash(o.reported) }))), "Never offered an update.");
    } catch (e) { toast(e.message, true); return; }
    box.hidden = false;
    $("#device-detail-title").focus();
  }
  U.deviceDetail = deviceDetail;

  Object.assign(U.pages, {
    rollouts: setupRollouts, pins: setupPins, networks: setupNetworks, "upgrade-paths": setupUpgradePaths,
  });
})();
