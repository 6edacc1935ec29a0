// The staff console: my orders, one order's detail and actions, the supervisor's view.
"use strict";
(function () {
  var L = window.Linli, el = L.el;
  var API = "/console/api/staff";
  var state = { me: null, csrf: "", detail: null };
  var MAX_PHOTO = 5 * 1024 * 1024;
  var PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
  var EVENTS = {
    created: "居民报事", dispatched: "派单", order_accepted: "接单", returned: "退单",
    rerouted: "改派", arbitration: "转兜底协调", progress_note: "进展", order_resolved: "办结",
    resolution_photo: "上传办结照片", sla_reminder: "时限提醒", sla_breached: "超时",
    escalated: "督办升级", info_added: "居民补充", evidence_added: "居民发来照片",
    rated: "居民评价", awaiting_agent: "转人工处理", on_duty_alerted: "已通知值班",
    orders_cancelled: "工单取消", location_shared: "居民发来位置", corrected: "信息更正", location_updated: "位置更新"
  };
  var STATUSES = { "new": "已受理", dispatched: "已派单", accepted: "已接单", in_progress: "处理中",
                   resolved: "已办结", closed: "已关闭", cancelled: "已取消", reopened: "已重新处理" };
  var RUNGS = { worker: "经办人", department_head: "部门负责人",
                community_director: "社区主任", street_office: "街道" };

  function $(id) { return document.getElementById(id); }
  function show(id, on) { $(id).hidden = !on; }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function when(iso) {
    if (!iso) return "";
    return new Date(iso).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
  }
  function span(minutes) {
    var m = Math.abs(minutes);
    if (m < 60) return m + "分钟";
    if (m < 1440) return Math.floor(m / 60) + "小时" + (m % 60 ? (m % 60) + "分" : "");
    return Math.floor(m / 1440) + "天" + Math.floor((m % 1440) / 60) + "小时";
  }
  function notify(text, isError) {
    var box = $("notice");
    box.className = isError ? "error" : "";
    box.textContent = text || "";
    if (text) window.scrollTo(0, 0);
  }
  function slaText(sla) {
    if (!sla || sla.state === "met" || !sla.stage_label) return "时限已达成";
    if (sla.state === "overdue") return sla.stage_label + "已超时" + span(sla.minutes_left);
    return sla.stage_label + "时限 " + when(sla.due) + "，还剩" + span(sla.minutes_left);
  }

  async function postForm(path, form) {
    var response = await fetch(path, { method: "POST", credentials: "same-origin", body: form,
      headers: { "Accept": "application/json", "X-CSRF-Token": state.csrf } });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (response.status === 401) {
      location.href = "/console/login?next=" + encodeURIComponent(location.pathname);
      throw new Error(data.error || "请重新登录");
    }
    if (!response.ok) throw new Error(data.error || ("出错了（" + response.status + "）"));
    return data;
  }

  function orderCard(o, showHolder) {
    var card = el("button", { type: "button", "class": "order", "data-order": String(o.id) });
    var title = el("div", { "class": "title" }, o.category_name + " ");
    title.appendChild(el("span", { "class": "badge" + (o.urgency === "P1" ? " p0" : o.urgency === "P2" ? " p1" : "") },
                         o.urgency_label));
    card.appendChild(title);
    card.appendChild(el("div", { "class": "line" }, (o.location || "位置未填") + " · " + o.ticket));
    card.appendChild(el("div", { "class": "line sla-" + o.sla.state }, slaText(o.sla)));
    var status = o.status_label + " · " + o.role_label + " · " + when(o.created_at) + "派单";
    if (showHolder) status += " · " + (o.assignee ? o.assignee.name : "未派人") + " · 已" + span(o.age_minutes);
    card.appendChild(el("div", { "class": "line" }, status));
    card.addEventListener("click", function () { location.hash = "#order/" + o.id; });
    return card;
  }
  function fill(id, orders, empty, showHolder) {
    var box = clear($(id));
    if (!orders.length) { box.appendChild(el("p", { "class": "empty" }, empty)); return; }
    orders.forEach(function (o) { box.appendChild(orderCard(o, showHolder)); });
  }

  async function showList() {
    var data = await L.api("GET", API + "/orders");
    state.me = data.me;
    $("who").textContent = data.me.display_name + (data.me.department_name ? " · " + data.me.department_name : "");
    show("tabs", data.me.supervisor);
    $("queue-title").textContent = data.me.role === "admin" ? "全部在办工单" : "部门待接单";
    fill("mine", data.mine, data.me.can_act ? "暂时没有派给您的工单。" : "您的账号没有绑定值班人员，只能查看。");
    fill("queue", data.queue, "部门暂时没有待接单的工单。", data.me.role === "admin");
  }

  function row(list, term, value, node) {
    list.appendChild(el("dt", {}, term));
    var dd = el("dd", {}, node ? undefined : (value || "—"));
    if (node) dd.appendChild(node);
    list.appendChild(dd);
  }

  function renderDetail(d) {
    state.detail = d;
    var o = d.order, t = d.ticket;
    var box = clear($("summary"));
    var title = el("h2", {}, o.category_name + " ");
    title.appendChild(el("span", { "class": "badge" + (o.urgency === "P1" ? " p0" : "") }, o.urgency_label));
    box.appendChild(title);
    var list = el("dl");
    row(list, "工单号", t.number);
    row(list, "状态", o.status_label + "（" + o.department_name + " · " + o.role_label + "）");
    row(list, "经办人", o.assignee ? o.assignee.name : "未派人（部门待接单）");
    row(list, "位置", t.location_display);
    row(list, "居民描述", t.description);
    if (t.time_window) row(list, "上门时间", t.time_window);
    if (d.phone_visible && t.contact_phone) {
      row(list, "联系电话", null, el("a", { "class": "tel", href: "tel:" + t.contact_phone, id: "phone" }, t.contact_phone));
    } else {
      row(list, "联系电话", null, el("span", { id: "phone" }, (t.contact_phone || "—") + "（接单后可见）"));
    }
    row(list, "时限", null, el("span", { "class": "sla-" + o.sla.state }, slaText(o.sla)));
    box.appendChild(list);

    show("accept", d.actions.accept);
    show("return-open", d.actions["return"]);
    show("progress-open", d.actions.progress);
    show("resolve-open", d.actions.resolve);
    ["return-form", "progress-form", "resolve-form"].forEach(function (id) { show(id, false); });
    var reasons = clear($("return-reason"));
    reasons.appendChild(el("option", { value: "" }, "请选择"));
    d.return_reasons.forEach(function (r) { reasons.appendChild(el("option", { value: r.code }, r.label)); });

    var orders = clear($("orders"));
    orders.appendChild(el("p", { "class": "muted" }, "经手部门：" + d.hops + " 个"));
    d.work_orders.forEach(function (w) {
      var text = "第" + w.attempt + "次 · " + w.role_label + " · " + w.department_name + " · " +
        (w.assignee ? w.assignee.name : "未派人") + " · " + w.status_label;
      orders.appendChild(el("div", { "class": "line" }, text));
    });

    var photos = clear($("photos"));
    var shown = d.attachments.filter(function (a) { return a.href; });
    if (!shown.length) photos.appendChild(el("p", { "class": "empty" }, "暂无照片。"));
    shown.forEach(function (a) {
      photos.appendChild(el("div", { "class": "muted" }, a.kind_label + " · " + when(a.created_at)));
      photos.appendChild(el("img", { src: a.href, alt: a.kind_label, loading: "lazy" }));
    });

    var timeline = clear($("timeline"));
    t.events.slice().reverse().forEach(function (e) {
      var item = el("li");
      item.appendChild(el("time", {}, when(e.at)));
      var text = EVENTS[e.kind] || e.kind;
      var data = e.data || {};
      if (e.kind === "status_changed") text = "状态：" + (STATUSES[data.to] || data.to || "");
      if (data.reason_label) text += "（" + data.reason_label + "）";
      if (data.text) text += "：" + data.text;
      if (data.note) text += "：" + data.note;
      if (e.kind === "escalated" && data.rung) text += "至" + (RUNGS[data.rung] || data.rung);
      item.appendChild(el("span", {}, text));
      timeline.appendChild(item);
    });
  }

  async function showDetail(id) {
    renderDetail(await L.api("GET", API + "/orders/" + id));
  }

  async function act(button, run) {
    button.disabled = true;
    try {
      var result = await run();
      renderDetail(result.detail);
      notify(result.message);
    } catch (e) { notify(e.message, true); } finally { button.disabled = false; }
  }
  function path(action) { return API + "/orders/" + state.detail.order.id + "/" + action; }

  function toggle(formId) {
    ["return-form", "progress-form", "resolve-form"].forEach(function (id) {
      show(id, id === formId ? $(id).hidden : false);
    });
  }

  function metricsText(m) {
    if (!m) return "近30天暂无数据。";
    var pct = function (v) { return v === null || v === undefined ? "—" : Math.round(v * 100) + "%"; };
    var parts = ["近30天 " + m.count + " 单", "一次派准率 " + pct(m.first_time_right)];
    Object.keys(m.sla || {}).forEach(function (k) { parts.push(m.sla[k].label + "达标率 " + pct(m.sla[k].rate)); });
    if (m.first_response_p50 !== null) parts.push("响应中位 " + span(Math.round(m.first_response_p50)));
    return parts.join(" · ");
  }

  async function showDepartment() {
    var chosen = $("dept-select").value;
    var data = await L.api("GET", API + "/department" + (chosen ? "?department=" + encodeURIComponent(chosen) : ""));
    if (data.departments.length && !$("dept-select").options.length) {
      var select = $("dept-select");
      select.appendChild(el("option", { value: "" }, "全部部门"));
      data.departments.forEach(function (d) { select.appendChild(el("option", { value: d.id }, d.name)); });
      show("dept-select", true); show("dept-label", true);
    }
    $("metrics").textContent = data.department_name + "：" + metricsText(data.metrics);
    var box = clear($("breaches"));
    if (!data.breaches.length) box.appendChild(el("p", { "class": "empty" }, "没有超时工单。"));
    data.breaches.forEach(function (b) {
      var card = el("button", { type: "button", "class": "order", "data-breach": String(b.order) });
      card.appendChild(el("div", { "class": "title sla-overdue" }, b.ticket + " · " + b.stage_label + "超时"));
      var text = "时限 " + when(b.due) + " · " + (b.pending ? "已超时" + span(b.overdue_minutes) : "已补办") +
        " · 经办人 " + (b.assignee || "未派人");
      if (b.escalated_to) text += " · 已督办至" + (RUNGS[b.escalated_to.rung] || b.escalated_to.rung);
      card.appendChild(el("div", { "class": "line" }, text));
      card.addEventListener("click", function () { location.hash = "#order/" + b.order; });
      box.appendChild(card);
    });
    fill("dept-orders", data.orders, "部门暂时没有在办工单。", true);
  }

  async function route() {
    var hash = location.hash;
    var match = /^#order\/(\d+)$/.exec(hash);
    var dept = hash === "#dept";
    show("list-view", !match && !dept);
    show("detail-view", !!match);
    show("dept-view", dept);
    $("tab-mine").setAttribute("aria-selected", String(!dept));
    $("tab-dept").setAttribute("aria-selected", String(dept));
    try {
      if (match) await showDetail(match[1]);
      else if (dept) await showDepartment();
      else await showList();
    } catch (e) { notify(e.message, true); }
  }

  function wire() {
    $("logout").addEventListener("click", L.logout);
    $("refresh").addEventListener("click", function () { notify(""); route(); });
    $("back").addEventListener("click", function () { notify(""); location.hash = ""; });
    $("tab-mine").addEventListener("click", function () { notify(""); location.hash = ""; });
    $("tab-dept").addEventListener("click", function () { notify(""); location.hash = "#dept"; });
    $("dept-select").addEventListener("change", function () { showDepartment().catch(function (e) { notify(e.message, true); }); });
    $("accept").addEventListener("click", function () {
      act($("accept"), function () { return L.api("POST", path("accept"), {}); });
    });
    $("return-open").addEventListener("click", function () { toggle("return-form"); });
    $("progress-open").addEventListener("click", function () { toggle("progress-form"); });
    $("resolve-open").addEventListener("click", function () { toggle("resolve-form"); });
    $("return-form").addEventListener("submit", function (event) {
      event.preventDefault();
      if (!$("return-reason").value) { notify("请选择退单原因。", true); return; }
      act($("return-submit"), function () {
        return L.api("POST", path("return"), { reason: $("return-reason").value, note: $("return-note").value });
      });
    });
    $("progress-form").addEventListener("submit", function (event) {
      event.preventDefault();
      act($("progress-submit"), function () {
        return L.api("POST", path("progress"), { text: $("progress-text").value }).then(function (r) {
          $("progress-text").value = ""; return r;
        });
      });
    });
    $("resolve-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var file = $("resolve-photo").files[0];
      if (file && PHOTO_TYPES.indexOf(file.type) < 0) { notify("只能上传JPG、PNG或WebP格式的照片。", true); return; }
      if (file && file.size > MAX_PHOTO) { notify("照片不能超过5MB，请换一张或压缩后再传。", true); return; }
      var form = new FormData();
      form.append("note", $("resolve-note").value);
      if (file) form.append("photo", file, file.name);
      act($("resolve-submit"), function () { return postForm(path("resolve"), form); });
    });
    window.addEventListener("hashchange", route);
  }

  async function start() {
    wire();
    try {
      var who = await L.me();
      state.csrf = who.csrf_token;
    } catch (e) { notify(e.message, true); return; }
    await route();
  }
  start();
})();
