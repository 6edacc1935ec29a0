// The agents' console: live queue, my conversations, one transcript, replies and the draft order.
"use strict";
(function () {
  var API = "/console/api/agent";
  var me = null, open = null, shown = {}, refreshTimer = null, lastTyping = 0, opening = 0;
  var connected = false;
  function $(id) { return document.getElementById(id); }
  function show(id, yes) { $(id).classList.toggle("hidden", !yes); }
  function notice(text) { $("notice").textContent = text || ""; }
  function clock(iso) {
    if (!iso) return "";
    return new Date(iso).toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit" });
  }

  // --- the two lists -----------------------------------------------------------------------
  function row(c) {
    var li = Linli.el("li", { "data-id": String(c.id), "data-state": c.state });
    if (open && open.conversation.id === c.id) li.className = "open";
    var top = Linli.el("div", { class: "top" });
    var level = c.priority === 0 ? " p0" : (c.priority === 1 ? " p1" : "");
    top.appendChild(Linli.el("span", { class: "badge reason" + level }, c.reason_label));
    top.appendChild(Linli.el("span", { class: "channel" }, c.channel_label + " · " + c.resident));
    top.appendChild(Linli.el("span", { class: "wait" }, c.wait_text));
    li.appendChild(top);
    li.appendChild(Linli.el("div", { class: "last" }, c.last_message || "（还没有留言）"));
    li.addEventListener("click", function () { openConversation(c.id); });
    return li;
  }
  function fill(listId, countId, rows, emptyText) {
    var list = $(listId);
    list.textContent = "";
    $(countId).textContent = rows.length ? rows.length + " 个" : "";
    if (!rows.length) list.appendChild(Linli.el("li", { class: "empty" }, emptyText));
    rows.forEach(function (c) { list.appendChild(row(c)); });
  }
  async function refreshLists() {
    var lists = await Promise.all([Linli.api("GET", API + "/queue"), Linli.api("GET", API + "/mine"),
                                   Linli.api("GET", API + "/callbacks")]);
    fill("queue", "queue-count", lists[0].conversations, "现在没有人排队。");
    fill("mine", "mine-count", lists[1].conversations, "您手上还没有会话。");
    fillCallbacks(lists[2].tasks);
  }
  // Hotline callers to ring back: reveal the number (audited), then mark it done.
  function fillCallbacks(tasks) {
    var list = $("callbacks");
    list.textContent = "";
    $("callbacks-count").textContent = tasks.length ? tasks.length + " 个" : "";
    if (!tasks.length) list.appendChild(Linli.el("li", { class: "empty" }, "没有待回访的来电。"));
    tasks.forEach(function (t) {
      var item = Linli.el("li", { "data-callback": String(t.id) });
      item.appendChild(Linli.el("div", {}, t.reason + " · " + t.phone));
      item.appendChild(Linli.el("div", { class: "muted" }, t.summary));
      if (t.has_phone) {
        var show = Linli.el("button", { type: "button", class: "secondary" }, "显示号码");
        show.addEventListener("click", async function (event) {
          event.stopPropagation();
          try { show.textContent = (await Linli.api("POST", API + "/callbacks/" + t.id + "/phone", {})).phone; }
          catch (e) { notice(e.message); }
        });
        item.appendChild(show);
      }
      var finish = Linli.el("button", { type: "button" }, "已回访");
      finish.addEventListener("click", async function (event) {
        event.stopPropagation();
        var note = prompt("回访结果（可不填）：") || "";
        try { await Linli.api("POST", API + "/callbacks/" + t.id + "/done", { note: note }); refreshSoon(); }
        catch (e) { notice(e.message); }
      });
      item.appendChild(finish);
      list.appendChild(item);
    });
  }
  // Throttled, not debounced: under a steady stream of events the lists still refresh,
  // at most about once a second per console instead of once per event.
  var lastRefresh = 0;
  function refreshSoon() {
    if (refreshTimer) return;
    var wait = Math.max(150, 1000 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      lastRefresh = Date.now();
      refreshLists().catch(function (e) { notice(e.message); });
    }, wait);
  }

  // --- one conversation --------------------------------------------------------------------
  function addMessage(m) {
    if (m.id) { if (shown[m.id]) return; shown[m.id] = true; }
    var who = m.by === "resident" ? "居民" : (m.by === "agent" ? (m.agent_name || "客服") : "智能助手");
    var div = Linli.el("div", { class: "msg " + m.by, "data-by": m.by });
    div.appendChild(Linli.el("span", { class: "meta" }, who + " " + clock(m.at)));
    div.appendChild(document.createTextNode(m.text));
    var log = $("transcript");
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
  }
  function renderHead(c) {
    $("pane-title").textContent = c.channel_label + " · " + c.resident;
    $("pane-reason").textContent = c.reason_label;
    show("pane-reason", !!c.reason);
    var state = c.state_label;
    if (c.state === "queued") state += "，" + c.wait_text;
    if (c.state === "agent") state += c.mine ? "（由您接待）" : "（" + (c.agent_name || "同事") + "接待）";
    $("pane-state").textContent = state;
    show("pane-actions", c.state === "queued" || c.mine);
    show("claim", c.state === "queued");
    ["transfer-to", "transfer", "return"].forEach(function (id) { show(id, c.mine); });
    show("call-transfer", c.mine && c.channel === "voice");
    show("compose", c.mine);
    show("canned", c.mine);
    if (c.mine) loadColleagues();
  }
  function setValue(id, value) { $(id).value = value == null ? "" : value; }
  function renderDraft(detail) {
    var d = detail.draft;
    setValue("d-category", d.category); setValue("d-building", d.building);
    setValue("d-unit", d.unit); setValue("d-room", d.room);
    setValue("d-description", d.description); setValue("d-phone", d.contact_phone);
    setValue("d-urgency", d.urgency || "");
    $("draft-error").textContent = "";
    var t = detail.ticket;
    $("draft-result").textContent = t ? "最近的工单：" + t.number + "（" + t.status_label + "，" +
      t.lead_department_name + "）" : "";
    $("draft-source").textContent = detail.draft_from_bot ? "机器人已整理" : (t ? "来自最近工单" : "");
    show("draft", true); show("draft-empty", false);
    $("dispatch").disabled = !detail.conversation.mine;
    if (detail.undelivered) notice("有 " + detail.undelivered + " 条消息没能送达居民，请换个方式联系。");
  }
  async function openConversation(id) {
    var ticket = ++opening;
    try {
      var detail = await Linli.api("GET", API + "/conversations/" + id);
      if (ticket !== opening) return;
      open = detail; shown = {};
      notice("");
      $("transcript").textContent = "";
      detail.messages.forEach(addMessage);
      renderHead(detail.conversation);
      renderDraft(detail);
      document.querySelectorAll(".list li").forEach(function (li) {
        li.classList.toggle("open", li.getAttribute("data-id") === String(id));
      });
    } catch (e) { notice(e.message); refreshSoon(); }
  }
  function reopen(message) {
    if (!open) return;
    openConversation(open.conversation.id).then(function () { if (message) notice(message); });
  }
  async function loadColleagues() {
    var data = await Linli.api("GET", API + "/agents");
    var select = $("transfer-to");
    select.textContent = "";
    select.appendChild(Linli.el("option", { value: "" }, "选择同事"));
    data.agents.forEach(function (a) {
      select.appendChild(Linli.el("option", { value: String(a.id) }, a.display_name + (a.online ? "（在线）" : "")));
    });
  }

  // --- actions -----------------------------------------------------------------------------
  async function act(path, body, done) {
    if (!open) return;
    notice("");
    try {
      var data = await Linli.api("POST", API + "/conversations/" + open.conversation.id + path, body || {});
      if (done) done(data);
    } catch (e) { notice(e.message); }
    refreshSoon();
  }
  $("claim").addEventListener("click", function () { act("/claim", {}, function () { reopen(); }); });
  $("transfer").addEventListener("click", function () {
    var to = $("transfer-to").value;
    if (!to) { notice("请先选一位同事。"); return; }
    act("/transfer", { to: Number(to) }, function (data) { reopen("已转给" + data.to + "。"); });
  });
  $("return").addEventListener("click", function () {
    if (!confirm("交还给智能助手吗？居民会收到提示。")) return;
    act("/return", {}, function (data) { reopen(data.warning); });
  });
  $("call-transfer").addEventListener("click", function () {
    act("/call-transfer", {}, function () { notice("正在把来电转到您的电话，请接听。"); });
  });
  function sendReply() {
    var text = $("reply").value.trim();
    if (!text) { notice("请先写好要回复的话。"); return; }
    $("send").disabled = true;
    act("/reply", { text: text }, function (data) {
      $("reply").value = "";
      if (data.warning) notice(data.warning);
      addMessage({ id: data.message_id, by: "agent", agent_name: me.display_name, text: text, at: data.at });
    }).finally(function () { $("send").disabled = false; });
  }
  $("compose").addEventListener("submit", function (event) { event.preventDefault(); sendReply(); });
  $("reply").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); sendReply(); }
  });
  $("reply").addEventListener("input", function () {
    if (!open || !open.conversation.mine || open.conversation.channel !== "web") return;
    if (Date.now() - lastTyping < 3000) return;
    lastTyping = Date.now();
    Linli.api("POST", API + "/conversations/" + open.conversation.id + "/typing", {}).catch(function () {});
  });
  async function dispatch(force) {
    var body = { force: !!force };
    ["category", "building", "unit", "room", "description", "contact_phone", "urgency"].forEach(function (name) {
      var value = $("draft").elements[name].value.trim();
      body[name] = value || null;
    });
    $("draft-error").textContent = "";
    $("dispatch").disabled = true;
    try {
      var response = await fetch(API + "/conversations/" + open.conversation.id + "/dispatch", {
        method: "POST", credentials: "same-origin", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-CSRF-Token": me.csrf_token } });
      var data = await response.json().catch(function () { return {}; });
      if (response.status === 409 && data.code === "duplicate" && confirm(data.error)) return dispatch(true);
      if (!response.ok) { $("draft-error").textContent = data.error || "派单没成功，请稍后再试。"; return; }
      $("draft-result").textContent = "已派单：" + data.number + "，派给" + data.ticket.lead_department_name + "。";
      addMessage({ by: "agent", agent_name: me.display_name, text: "（已派单 " + data.number + "）", at: new Date().toISOString() });
    } catch (e) { $("draft-error").textContent = "网络不通，请稍后再试。"; }
    finally { $("dispatch").disabled = !(open && open.conversation.mine); }
  }
  $("draft").addEventListener("submit", function (event) { event.preventDefault(); dispatch(false); });

  // --- live events -------------------------------------------------------------------------
  function onEvent(e) {
    if (e.type === "ready") {
      $("live").textContent = "实时";
      refreshSoon();
      if (connected) reopen();  // back after a drop: fetch what was missed
      connected = true;
      return;
    }
    refreshSoon();
    if (!open || e.conversation_id !== open.conversation.id) return;
    if (e.type === "message") addMessage({ by: "resident", text: e.text, at: e.at });
    if (e.type === "reply" || e.type === "returned" || e.type === "dispatched") {
      addMessage({ id: e.message_id, by: "agent", agent_name: e.agent, text: e.text, at: e.at });
    }
    var byMe = e.agent_id === me.account_id;
    if ((e.type === "claimed" || e.type === "returned" || e.type === "transferred") && !byMe) reopen();
  }

  async function start() {
    try { me = await Linli.me(); } catch (e) { return; }
    $("me").textContent = me.display_name;
    $("logout").addEventListener("click", Linli.logout);
    if (["agent", "supervisor", "admin"].indexOf(me.role) < 0) {
      $("fatal").textContent = "这个页面是给人工客服用的，您的工作台在别处。";
      show("fatal", true); show("main", false);
      return;
    }
    var opts = await Linli.api("GET", API + "/options");
    var category = $("d-category");
    category.appendChild(Linli.el("option", { value: "" }, "请选择"));
    opts.categories.forEach(function (c) { category.appendChild(Linli.el("option", { value: c.id }, c.name)); });
    var urgency = $("d-urgency");
    urgency.appendChild(Linli.el("option", { value: "" }, "按类别默认"));
    opts.urgencies.forEach(function (u) { urgency.appendChild(Linli.el("option", { value: u.id }, u.id + " " + u.label)); });
    opts.canned.forEach(function (c) {
      var button = Linli.el("button", { type: "button", title: c.text }, c.title);
      button.addEventListener("click", function () {
        var box = $("reply");
        box.value = box.value ? box.value + c.text : c.text;
        box.focus();
        box.dispatchEvent(new Event("input"));
      });
      $("canned").appendChild(button);
    });
    await refreshLists();
    Linli.socket("/console/ws", onEvent);
    setInterval(refreshSoon, 30000);  // wait times move on even when nothing happens
  }
  start().catch(function (e) { notice(e.message); });
})();
