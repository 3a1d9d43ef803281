// ucupdates Control Panel: a small script over the JSON API (/api/). No framework, no CDN.
// Every value from the server goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const meta = (name) => { const m = $(`meta[name="${name}"]`); return m ? m.content : ""; };
  const isAdmin = () => meta("role") === "admin";

  // -- talking to the API -----------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status, data) { super(message); this.status = status; this.data = data; }
  }

  async function api(method, path, body) {
    const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") options.headers["X-CSRF-Token"] = meta("csrf-token");
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (e) {
      throw new ApiError("the appliance cannot be reached", 0, null);
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401 && path !== "/api/login") {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
    }
    if (!response.ok) {
      throw new ApiError((data && data.error) || response.statusText, response.status, data);
    }
    return data;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
      else if (v !== "" && v !== null && v !== undefined) q.append(k, v);
    }
    const text = q.toString();
    return text ? "?" + text : "";
  }

  function formValues(form) {
    const values = {};
    for (const [k, v] of new FormData(form).entries()) values[k] = String(v).trim();
    return values;
  }

  // -- building the page ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const dash = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));
  const when = (iso) => (iso ? String(iso).replace("T", " ").replace("Z", "") : "–");
  const badge = (text) => el("span", { class: "badge " + text, text });
  const bytes = (n) => (n >= 1073741824 ? (n / 1073741824).toFixed(1) + " GB"
    : n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : n >= 1024 ? (n / 1024).toFixed(0) + " KB" : n + " B");

  function fillTable(table, rows, empty) {
    const body = $("tbody", table);
    body.replaceChildren();
    if (!rows.length) {
      const columns = $$("thead th", table).length;
      body.append(el("tr", {}, el("td", { colspan: columns, text: empty })));
      return;
    }
    rows.forEach((r) => body.append(r));
  }

  function fillSelect(select, values) {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", text: "All" }));
    values.forEach((v) => select.append(el("option", { value: v, text: v })));
    if (values.includes(keep)) select.value = keep;
  }

  let toastTimer = null;
  function toast(message, bad) {
    const box = $("#toast");
    box.textContent = message;
    box.className = "toast show" + (bad ? " bad" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.className = "toast"; }, bad ? 9000 : 5000);
  }

  // A native <dialog>: Escape cancels, focus stays inside, the opener gets it back.
  // `rules`: the lines naming what will change (the Updates page's dialog has a list for them).
  function fillDialog(title, summary, details, okLabel, canConfirm, rules) {
    const dialog = $("#confirm");
    $("#confirm-title", dialog).textContent = title;
    $("#confirm-impact", dialog).textContent = summary;
    $("#confirm-details", dialog).replaceChildren(...details.map((d) => el("li", { text: d })));
    const list = $("#confirm-rules", dialog);
    if (list) list.replaceChildren(...(rules || []).map((r) => el("li", { text: r })));
    const ok = $("#confirm-ok", dialog);
    ok.textContent = okLabel;
    ok.disabled = canConfirm === false;
    return ok;
  }

  function confirmDialog(title, summary, details, okLabel, canConfirm, rules) {
    const dialog = $("#confirm");
    const ok = fillDialog(title, summary, details, okLabel, canConfirm, rules);
    const opener = document.activeElement;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        if (opener && opener.focus) opener.focus();
        resolve(dialog.returnValue === "ok");
      }, { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
      (canConfirm === false ? $("#confirm-cancel", dialog) : ok).focus();
    });
  }

  // -- every page -------------------------------------------------------------------------

  function setupLogout() {
    const button = $("#logout");
    if (!button) return;
    button.addEventListener("click", async () => {
      try { await api("POST", "/api/logout"); } catch (e) { /* the session is gone anyway */ }
      location.href = "/login";
    });
  }

  // -- log in -----------------------------------------------------------------------------

  function setupLogin() {
    const form = $("#login-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#login-error");
      error.textContent = "";
      const { name, password } = formValues(form);
      if (!name || !password) { error.textContent = "Give your account name and password."; return; }
      try {
        await api("POST", "/api/login", { name, password: $("#login-password").value });
        // the server checked ?next= and kept only one of the Control Panel's own pages
        location.href = form.dataset.next || "/";
      } catch (e) {
        error.textContent = e.message;
        $("#login-password").value = "";
        $("#login-password").focus();
      }
    });
  }

  // -- Updates ----------------------------------------------------------------------------

  const ACTION_WORDS = { approve: "Approve", reset: "Reset", restore: "Restore", remove: "Remove" };
  const ACTION_DONE = { approve: "approved", reset: "reset", restore: "restored", remove: "removed" };

  function setupUpdates() {
    const form = $("#rule-filters");
    const table = $("#rules");
    const selected = new Set();
    let shown = [];

    function updateToolbar() {
      const count = selected.size;
      $("#selection-count").textContent = count ? `${count} rule${count > 1 ? "s" : ""} selected` : "No rule selected";
      $$("[data-action]").forEach((b) => { b.disabled = count === 0; });
      const all = $("#select-all");
      all.checked = shown.length > 0 && shown.every((r) => selected.has(r.id));
      all.indeterminate = !all.checked && shown.some((r) => selected.has(r.id));
    }

    let asked = 0;
    async function load() {
      const mine = ++asked;
      let data;
      const counts = api("GET", "/api/offer-counts").then((d) => d.counts, () => []);
      try { data = await api("GET", "/api/rules" + query(formValues(form))); } catch (e) { toast(e.message, true); return; }
      const confirmed = confirmedText(await counts);
      if (mine !== asked) return; // a newer filter's answer is on its way
      for (const name of ["brand", "model", "locale", "revision"]) fillSelect($(`select[name=${name}]`, form), data.choices[name]);
      shown = data.rules;
      const ids = new Set(shown.map((r) => r.id));
      [...selected].forEach((id) => { if (!ids.has(id)) selected.delete(id); });
      $("#rules-count").textContent = `(${shown.length})`;
      fillTable(table, shown.map((r) => {
        const label = `Select rule ${r.id}: ${r.brand} ${r.model} ${r.locale}`;
        const box = el("input", { type: "checkbox", "aria-label": label, value: r.id });
        box.checked = selected.has(r.id);
        const row = el("tr", { "data-rule": r.id, class: box.checked ? "selected" : "" },
          el("td", { class: "check" }, box), el("td", { class: "num", text: r.id }),
          el("td", { text: r.device_type }), el("td", { text: r.brand }), el("td", { text: r.model }),
          el("td", { text: r.revision }), el("td", { text: r.locale }), el("td", { text: r.update_type }),
          el("td", { text: dash(r.approved_version) }), el("td", { text: dash(r.pending_version) }),
          el("td", { text: dash(r.restore_version) }), el("td", {}, badge(r.state)),
          el("td", { text: confirmed(r) }), el("td", { class: "guid", text: dash(r.guid) }));
        box.addEventListener("change", () => {
          if (box.checked) selected.add(r.id); else selected.delete(r.id);
          row.classList.toggle("selected", box.checked);
          updateToolbar();
        });
        return row;
      }), "No rule matches. Upload a package to create rules.");
      updateToolbar();
    }

    $("#select-all").addEventListener("change", (event) => {
      shown.forEach((r) => { if (event.target.checked) selected.add(r.id); else selected.delete(r.id); });
      $$("tbody input[type=checkbox]", table).forEach((b) => {
        b.checked = event.target.checked;
        b.closest("tr").classList.toggle("selected", b.checked);
      });
      updateToolbar();
    });
    form.addEventListener("change", load);
    form.addEventListener("reset", () => setTimeout(load, 0));
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

    // How many devices the next check confirmed for each rule's approved version.
    function confirmedText(counts) {
      return (r) => {
        const mine = counts.filter((c) => c.rule_id === r.id && c.version === r.approved_version);
        const by = {};
        mine.forEach((c) => { by[c.outcome] = (by[c.outcome] || 0) + c.devices; });
        const parts = ["updated", "pending", "stuck", "reverted", "silent"].filter((o) => by[o]).map((o) => `${by[o]} ${o}`);
        return parts.length ? parts.join(", ") : "–";
      };
    }

    // An approval may go to every device or in stages; the stages must rise to 100.
    function stagesOf() {
      const values = $("#confirm-stages").value.split(/[,;\s]+/).filter((v) => v).map(Number);
      const rising = values.every((v, i) => v > 0 && v <= 100 && (i === 0 || v > values[i - 1]));
      return values.length && rising && values[values.length - 1] === 100 ? values : null;
    }
    const staged = () => $("input[name=how]:checked").value === "staged";
    // `canGo`: whether the rest of the dialog lets the action go ahead.
    function approveChoices(action, canGo) {
      const how = $("#confirm-how");
      how.hidden = action !== "approve";
      const gate = $("#confirm-gate");
      gate.hidden = action !== "approve";
      gate.open = false;
      for (const f of ["#confirm-gate-devices", "#confirm-gate-hours", "#confirm-gate-override"]) $(f).value = "";
      $("input[name=how][value=all]").checked = true;
      $("#confirm-staged").hidden = true;
      const check = () => {
        $("#confirm-staged").hidden = !staged();
        const bad = staged() && stagesOf() === null;
        $("#confirm-stages").setAttribute("aria-invalid", bad ? "true" : "false");
        $("#confirm-ok").disabled = bad || !canGo();
      };
      $$("input[name=how]").forEach((r) => { r.onchange = check; });
      $("#confirm-stages").oninput = check;
      return check;
    }
    // An approval in stages, or behind a soak gate, goes rule by rule through /api/rollouts.
    function rolloutBody() {
      if ($("#confirm-how").hidden) return null;
      const body = {};
      if (staged()) {
        body.stages = stagesOf();
        const soak = $("#confirm-soak").value.trim();
        if (soak) body.soak_hours = Number(soak);
      }
      const devices = $("#confirm-gate-devices").value.trim();
      if (devices) {
        body.soak_gate = { devices: Number(devices), hours: Number($("#confirm-gate-hours").value.trim() || 0) };
        const why = $("#confirm-gate-override").value.trim();
        if (why) body.override_soak = why;
      }
      return Object.keys(body).length ? body : null;
    }

    // Would approving move a rule's approved version back? The server decides (the
    // preview's needs_downgrade); the versions compared here stand in where it does not say.
    function olderThan(a, b) {
      const dotted = /^\d+(\.\d+)*$/;
      if (!dotted.test(a) || !dotted.test(b)) return a !== b;
      const x = a.split(".").map(Number), y = b.split(".").map(Number);
      for (let i = 0; i < Math.max(x.length, y.length); i++) {
        if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) < (y[i] || 0);
      }
      return false;
    }
    function downgrades(action, ids, impact) {
      if (action !== "approve") return [];
      if (impact.needs_downgrade) return impact.needs_downgrade;
      return shown.filter((r) => ids.includes(r.id) && r.approved_version && r.pending_version
        && olderThan(r.pending_version, r.approved_version)).map((r) => r.id);
    }

    // The dialog's title: what confirming does. Rules that wait for their box (a downgrade
    // to allow, a restore without a restore version to force) are named as such until it
    // is ticked, when the preview counts them among the rules changed.
    function titleOf(action, impact) {
      const n = impact.rule_ids.length;
      const rules = (k) => `${k} rule${k === 1 ? "" : "s"}`;
      const waiting = (action === "approve" ? impact.needs_downgrade
        : action === "restore" && !impact.forced ? impact.needs_force : null) || [];
      const k = waiting.length;
      if (!k) return `${ACTION_WORDS[action]} ${rules(n)}?`;
      const held = action === "approve" ? `${k} downgrade${k === 1 ? "" : "s"}` : `${rules(k)} without a restore version`;
      return `${ACTION_WORDS[action]} ${n ? `${rules(n)} and ` : ""}${held}?`;
    }

    // What the preview says, as the dialog shows it: the rules named (six, then "and N
    // more"), the sentence, what is offered now, and the rules skipped with their reason.
    function dialogOf(action, impact) {
      const n = impact.rule_ids.length;
      const rules = impact.rules.map((r) => r.text);
      if (impact.more_rules) rules.push(`and ${impact.more_rules} more`);
      const details = impact.before.map((o) => `Now ${o.devices} ${o.devices === 1 ? "phone is" : "phones are"} offered ${o.version}.`);
      impact.skipped.forEach((s) => details.push(`Rule ${s.rule_id} is skipped: it ${s.reason}.`));
      return [titleOf(action, impact), impact.summary, details, ACTION_WORDS[action], n > 0, rules];
    }

    $$("[data-action]").forEach((button) => button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const ids = [...selected];
      let downgrade = false;
      const preview = (force) => api("GET", "/api/rules/preview" + query({ action, id: ids, force: force ? "1" : "", allow_downgrade: downgrade ? "1" : "" }));
      let impact;
      try { impact = await preview(false); } catch (e) { toast(e.message, true); return; }
      // An approval that would move a rule's approved version back is refused unless the
      // admin ticks the box that says which versions go back.
      const downBox = $("#confirm-downgrade-box");
      const down = $("#confirm-downgrade");
      const backwards = downgrades(action, ids, impact);
      down.checked = false;
      downBox.hidden = backwards.length === 0;
      $("#confirm-downgrade-text").textContent = `Allow the downgrade: approve ${backwards.length === 1 ? "the older version" : `the ${backwards.length} older versions`} anyway; `
        + "phones running the newer one will be offered the older one (the event log records it as a downgrade).";
      const canGo = () => impact.rule_ids.length > 0 && (backwards.length === 0 || down.checked);
      const check = approveChoices(action, canGo);
      down.onchange = async () => {
        downgrade = down.checked;
        check();
        try { impact = await preview(force.checked); } catch (e) { toast(e.message, true); return; }
        if (down.checked === downgrade) { fillDialog(...dialogOf(action, impact)); check(); }
      };
      // A restore of rules without a restore version leaves them with none approved: only
      // when the admin ticks the box that says so (the preview is worked out again).
      const forceBox = $("#confirm-force-box");
      const force = $("#confirm-force");
      const held = impact.needs_force.length;
      force.checked = false;
      forceBox.hidden = held === 0;
      $("#confirm-force-text").textContent = `Restore ${held === 1 ? "the rule" : `the ${held} rules`} without a restore version anyway: `
        + `${held === 1 ? "it" : "they"} will have no approved version, and phones will be offered no update for ${held === 1 ? "it" : "them"}.`;
      force.onchange = async () => {
        const asked = force.checked;
        try { impact = await preview(asked); } catch (e) { toast(e.message, true); return; }
        if (force.checked === asked) fillDialog(...dialogOf(action, impact));
      };
      const asked = confirmDialog(...dialogOf(action, impact));
      if (backwards.length) { check(); down.focus(); }
      const ok = await asked;
      force.onchange = null;
      down.onchange = null;
      if (!ok) return;
      const allow = downgrade ? { allow_downgrade: true } : {};
      const rollout = rolloutBody();
      try {
        if (rollout) {
          // rule by rule, each guarded against a downgrade (and by the soak gate if asked)
          for (const id of ids) await api("POST", "/api/rollouts", { rule_id: id, ...rollout, ...allow });
          const how = rollout.stages ? ` in stages (${rollout.stages.join(" → ")} %): see Rollouts` : "";
          toast(`${ids.length} rule${ids.length === 1 ? "" : "s"} approved${how}${rollout.override_soak ? " (soak gate overridden)" : ""}`);
        } else {
          const result = await api("POST", "/api/rules/" + action, { ids, force: impact.forced, ...allow });
          const done = result.changes.filter((c) => c.skipped === null).length;
          toast(`${done} rule${done === 1 ? "" : "s"} ${ACTION_DONE[action]}${impact.forced ? " (forced)" : ""}`);
        }
      } catch (e) { toast(e.message, true); }
      await load();
    }));

    const clean = $("#clean-files");
    if (clean) clean.addEventListener("click", async () => {
      const ok = await confirmDialog("Clean files?",
        "Deletes every stored update that no rule references any more (as approved, pending or restore version), and its files.",
        [], "Clean files", true);
      if (!ok) return;
      try {
        const r = await api("POST", "/api/clean-files");
        toast(`Dropped ${r.updates.length} update(s); deleted ${r.files} file(s), ${bytes(r.bytes)}`);
      } catch (e) { toast(e.message, true); }
    });
    load();
  }

  // -- Upload -----------------------------------------------------------------------------

  function setupUpload() {
    const form = $("#upload-form");
    if (!form) return;
    let maxUpload = 0;
    api("GET", "/api/session").then((s) => {
      maxUpload = s.max_upload_bytes;
      $("#package-help").textContent += ` Up to ${bytes(maxUpload)}.`;
    }).catch(() => {});
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const error = $("#upload-error");
      error.textContent = "";
      const file = $("#package").files[0];
      if (!file) { error.textContent = "Choose a package file first."; $("#package").focus(); return; }
      if (maxUpload && file.size > maxUpload) {
        error.textContent = `${file.name} is ${bytes(file.size)}: over the upload limit of ${bytes(maxUpload)}.`;
        return;
      }
      const box = $("#upload-progress");
      const bar = $("#progress");
      const text = $("#progress-text");
      const submit = $("button[type=submit]", form);
      $("#progress-name").textContent = file.name;
      $("#progress-what").textContent = "Uploading";
      $("#upload-result").hidden = true;
      box.hidden = false;
      bar.value = 0;
      submit.disabled = true;
      // The import follows the upload: the page names a job and polls its progress.
      const job = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
      let finished = false;
      let timer = null;
      async function poll() {
        try {
          const p = await api("GET", "/api/packages/progress/" + job);
          if (finished) return;
          if (p.phase === "extracting") {
            bar.value = p.bytes ? Math.round((p.bytes_done / p.bytes) * 100) : 0;
            text.textContent = `Extracting ${p.updates_done} of ${p.updates} new update${p.updates === 1 ? "" : "s"} (${bytes(p.bytes_done)} of ${bytes(p.bytes)})…`;
          } else if (IMPORT_PHASES[p.phase]) {
            bar.value = p.phase === "committing" ? 100 : bar.value;
            text.textContent = IMPORT_PHASES[p.phase];
          }
        } catch (e) { /* the import has not started yet */ }
        if (!finished) timer = setTimeout(poll, 400);
      }
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/packages" + query({ name: file.name, job }));
      xhr.setRequestHeader("X-CSRF-Token", meta("csrf-token"));
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        bar.value = Math.round((e.loaded / e.total) * 100);
        text.textContent = `${bytes(e.loaded)} of ${bytes(e.total)}`;
      });
      xhr.upload.addEventListener("load", () => {
        $("#progress-what").textContent = "Importing";
        bar.value = 0;
        text.textContent = "Uploaded; importing…";
        poll();
      });
      const stop = () => { finished = true; clearTimeout(timer); };
      xhr.addEventListener("load", () => {
        stop();
        submit.disabled = false;
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        if (xhr.status === 401) { location.href = "/login?next=/upload"; return; }
        if (xhr.status !== 200 || !data) {
          box.hidden = true;
          error.textContent = (data && data.error) || `The upload failed (${xhr.status}).`;
          return;
        }
        bar.value = 100;
        text.textContent = "Imported.";
        showImport(data);
      });
      xhr.addEventListener("error", () => {
        stop();
        submit.disabled = false;
        box.hidden = true;
        error.textContent = "The upload was cut off (is the file over the limit, or the appliance unreachable?).";
      });
      xhr.send(file);
    });
  }

  const IMPORT_PHASES = {
    waiting: "Uploaded; the import is about to start…",
    scanning: "Reading the package…",
    verifying: "Checking the stored copies of versions imported before…",
    committing: "Moving the files into the store and recording the rules…",
  };

  function showImport(result) {
    const section = $("#upload-result");
    const created = result.updates.filter((u) => u.outcome === "new rule").length;
    const pending = result.updates.filter((u) => u.outcome === "now pending").length;
    const repaired = result.repaired.map((r) => `${r.path} (${r.problem})`);
    $("#result-summary").textContent = (result.changed
      ? `${result.package}: ${result.updates.length} device update(s), ${bytes(result.size)}; ${created} new rule(s), ${pending} now pending, ${bytes(result.written_bytes)} written. New versions are pending until approved.`
      : `${result.package}: nothing changed, this package was imported already (its stored files verified).`)
      + (repaired.length ? ` Repaired ${repaired.length} damaged stored file(s) from the package: ${repaired.join(", ")}.` : "");
    fillTable($("#result-table"), result.updates.map((u) => el("tr", {},
      el("td", { class: "num", text: dash(u.rule_id) }),
      el("td", { text: [u.device_type, u.brand, u.model, u.revision, u.locale, u.update_type].join("/") }),
      el("td", { text: u.version }), el("td", { class: "num", text: u.files }),
      el("td", { class: "num", text: bytes(u.bytes) }),
      el("td", { text: u.outcome + (u.previous_pending ? ` (was ${u.previous_pending})` : "") }))),
      "The package holds no device update.");
    section.hidden = false;
    $("#result-title").focus();
  }

  // -- Test devices -----------------------------------------------------------------------

  // The same forms as appliance/identifiers.py; the server checks again.
  const MAC = /^[0-9A-Fa-f]{2}([-:]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$/;
  const SERIAL = /^[A-Za-z0-9_-]{1,64}$/;
  const HELP = {
    mac: ["MAC address", "Six pairs of hex digits, bare or joined by - or : (00-04-F2-A1-B2-C3)"],
    serial: ["Serial number", "1 to 64 letters, digits, - or _"],
  };

  function setupTestDevices() {
    const table = $("#test-devices");
    async function load() {
      let data;
      try { data = await api("GET", "/api/test-devices"); } catch (e) { toast(e.message, true); return; }
      fillTable(table, data.test_devices.map((d) => el("tr", {},
        el("td", { class: "num", text: d.id }), el("td", { text: d.name }),
        el("td", { text: d.kind === "mac" ? "MAC" : "serial" }), el("td", { text: d.identifier }),
        el("td", { text: when(d.created_at) }),
        el("td", {}, isAdmin() ? el("button", {
          type: "button", class: "danger", text: "Remove…", "aria-label": `Remove test device ${d.name}`,
          onclick: async () => {
            const ok = await confirmDialog(`Remove test device ${d.name}?`,
              `${d.identifier} will get the approved version like every other device.`, [], "Remove", true);
            if (!ok) return;
            try { await api("DELETE", "/api/test-devices/" + d.id); toast(`Removed ${d.name}`); }
            catch (e) { toast(e.message, true); }
            load();
          },
        }) : null))), "No test devices yet.");
    }

    const form = $("#add-test-device");
    if (form) {
      const name = $("#td-name");
      const ident = $("#td-id");
      const add = $("#td-add");
      const kind = () => $("input[name=kind]:checked", form).value;

      function validate(showErrors) {
        const pattern = kind() === "mac" ? MAC : SERIAL;
        const value = ident.value.trim();
        const identOk = pattern.test(value);
        const nameOk = name.value.trim().length > 0 && name.value.trim().length <= 128;
        const identShown = showErrors && value !== "";
        ident.setAttribute("aria-invalid", identShown && !identOk ? "true" : "false");
        $("#td-id-error").textContent = identShown && !identOk ? `Not a valid ${HELP[kind()][0].toLowerCase()}: ${HELP[kind()][1]}.` : "";
        add.disabled = !(identOk && nameOk);
        return identOk && nameOk;
      }
      $$("input[name=kind]", form).forEach((r) => r.addEventListener("change", () => {
        $("#td-id-label").textContent = HELP[kind()][0];
        $("#td-id-help").textContent = HELP[kind()][1];
        validate(true);
      }));
      ident.addEventListener("input", () => validate(true));
      name.addEventListener("input", () => validate(true));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (!validate(true)) return;
        const body = { name: name.value.trim() };
        body[kind()] = ident.value.trim();
        try {
          const d = await api("POST", "/api/test-devices", body);
          toast(`Added test device ${d.name} (${d.identifier})`);
          form.reset();
          validate(false);
          name.focus();
        } catch (e) {
          $("#td-id-error").textContent = e.message;
          ident.setAttribute("aria-invalid", "true");
        }
        load();
      });
    }
    load();
  }

  // -- Devices ----------------------------------------------------------------------------

  // What the device was last offered, and what its next check made of it.
  function offerCell(offer) {
    if (!offer) return el("td", { text: "–" });
    return el("td", { title: offer.first_offered_at ? `first offered ${when(offer.first_offered_at)}` : null },
      `${offer.version} `, badge(offer.outcome));
  }

  function setupDevices() {
    const form = $("#device-filters");
    const table = $("#devices");
    let asked = 0;
    async function load() {
      const mine = ++asked;
      const params = formValues(form);
      $("#csv-link").setAttribute("href", "/api/devices.csv" + query(params));
      let data;
      try { data = await api("GET", "/api/devices" + query(params)); } catch (e) { toast(e.message, true); return; }
      if (mine !== asked) return; // a newer filter's answer is on its way
      for (const name of ["brand", "model", "locale", "version", "zone"]) fillSelect($(`select[name=${name}]`, form), data.choices[name]);
      $("#devices-count").textContent = `(${data.matched} of ${data.total})`;
      fillTable(table, data.devices.map((d) => el("tr", {},
        el("td", { text: d.mac || (d.serial ? "serial " + d.serial : d.identity) }),
        el("td", { text: `${dash(d.brand)} ${dash(d.model)} ${dash(d.revision)}` }),
        el("td", { text: dash(d.locale) }), el("td", { text: dash(d.version) }),
        el("td", { text: dash(d.approved_version) }), el("td", {}, badge(d.status)),
        offerCell(d.offer), el("td", { text: dash(d.zone) }), el("td", { text: dash(d.address) }),
        el("td", { text: when(d.last_seen) }),
        el("td", {}, el("button", {
          type: "button", text: "Details", "aria-label": `Details of ${d.mac || d.serial || d.identity}`,
          onclick: () => window.ucupdates.deviceDetail(d), // static/rollouts.js
        })))),
        data.total ? "No device matches the filters." : "No phone has checked in yet.");
    }
    async function charts() {
      for (const [box, path] of [["#versions-chart", "/api/charts/versions.svg"], ["#checkins-chart", "/api/charts/checkins.svg"]]) {
        try {
          const response = await fetch(path, { credentials: "same-origin" });
          if (response.ok) {
            const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml").documentElement;
            $(box).replaceChildren(document.importNode(svg, true));
          }
        } catch (e) { /* keep the chart the page came with */ }
      }
    }
    form.addEventListener("change", load);
    form.addEventListener("input", (e) => { if (e.target.type === "search") load(); });
    form.addEventListener("reset", () => setTimeout(load, 0));
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
    $("#refresh-devices").addEventListener("click", () => { load(); charts(); });
    load();
  }

  // -- Activity ---------------------------------------------------------------------------

  function describeChange(before, after) {
    if (before && after && typeof before === "object" && typeof after === "object") {
      const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
      const parts = keys.filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]))
        .map((k) => `${k} ${dash(before[k])} → ${dash(after[k])}`);
      return parts.join(", ") || "no change";
    }
    const pairs = (value) => (value && typeof value === "object" && !Array.isArray(value)
      ? Object.entries(value).map(([k, v]) => `${k} ${Array.isArray(v) && v.length > 3 ? v.length + " entries"
        : typeof v === "object" && v !== null ? JSON.stringify(v) : dash(v)}`).join(", ")
      : JSON.stringify(value));
    if (after !== null && after !== undefined) return pairs(after);
    if (before !== null && before !== undefined) return "was " + pairs(before);
    return "";
  }

  function setupActivity() {
    async function load() {
      let data;
      try { data = await api("GET", "/api/activity?limit=100"); } catch (e) { toast(e.message, true); return; }
      fillTable($("#events"), data.events.map((e) => el("tr", {},
        el("td", { text: when(e.at) }), el("td", { text: e.actor }), el("td", { text: e.action }),
        el("td", { text: e.target }), el("td", { class: "change", text: describeChange(e.before, e.after) }))),
        "Nothing has happened yet.");
      fillTable($("#device-events"), data.device_events.map((d) => el("tr", {},
        el("td", { text: when(d.at) }), el("td", { text: d.mac || d.serial || "–" }),
        el("td", { text: `${d.brand} ${d.model} ${d.locale}` }), el("td", { text: dash(d.reported) }),
        el("td", { text: dash(d.offered) }), el("td", { text: d.address }))),
        "No phone has checked in yet.");
    }
    $("#refresh-activity").addEventListener("click", load);
    load();
  }

  function setupCaptures() {
    async function show(id) {
      let data;
      try { data = await api("GET", "/api/captures/" + encodeURIComponent(id)); } catch (e) { toast(e.message, true); return; }
      $("#capture-detail-title").textContent = "Capture " + id;
      $("#capture-text").textContent = data.text;
      $("#capture-detail").hidden = false;
      $("#capture-text").focus();
    }
    async function load() {
      let data;
      try { data = await api("GET", "/api/captures"); } catch (e) { toast(e.message, true); return; }
      $("#capture-state").textContent = data.enabled
        ? `Capture mode is on: the first ${data.per_model} checks of each model, at most ${data.max_files} captures.`
        : "Capture mode is off (service.capture in the configuration).";
      $("#captures-count").textContent = `(${data.captures.length})`;
      fillTable($("#captures"), data.captures.map((c) => {
        const button = el("button", { type: "button", text: "Show", "aria-label": `Show capture ${c.id}` });
        button.addEventListener("click", () => show(c.id));
        return el("tr", { "data-capture": c.id },
          el("td", { text: when(c.captured_at) }), el("td", { text: c.client }), el("td", { text: c.zone }),
          el("td", { text: dash(c.model) }), el("td", { text: c.request }),
          el("td", { text: c.tls || "plain HTTP" }), el("td", { class: "num", text: c.status }),
          el("td", { text: c.reason }), el("td", {}, button));
      }), "Nothing captured yet.");
    }
    $("#refresh-captures").addEventListener("click", load);
    load();
  }

  // -- start ------------------------------------------------------------------------------

  const PAGES = {
    login: setupLogin, updates: setupUpdates, upload: setupUpload,
    "test-devices": setupTestDevices, devices: setupDevices, activity: setupActivity,
    captures: setupCaptures,
  };
  // static/rollouts.js builds the rollout pages with the same tools, and adds its pages here.
  window.ucupdates = {
    $, $$, meta, isAdmin, api, query, formValues, el, dash, when, badge, bytes, fillTable,
    fillSelect, toast, fillDialog, confirmDialog, pages: PAGES,
  };
  document.addEventListener("DOMContentLoaded", () => {
    setupLogout();
    const setup = PAGES[document.body.dataset.page];
    if (setup) setup();
  });
})();
