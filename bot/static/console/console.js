// Shared by the console pages: who is signed in, and requests that carry the CSRF token.
"use strict";
window.Linli = (function () {
  var csrf = "";
  function toLogin() { location.href = "/console/login?next=" + encodeURIComponent(location.pathname); }
  async function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    if (method !== "GET") { headers["Content-Type"] = "application/json"; headers["X-CSRF-Token"] = csrf; }
    var response = await fetch(path, { method: method, headers: headers, credentials: "same-origin",
                                        body: body === undefined ? undefined : JSON.stringify(body) });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (response.status === 401) { toLogin(); throw new Error(data.error || "请重新登录"); }
    if (!response.ok) { throw new Error(data.error || ("出错了（" + response.status + "）")); }
    return data;
  }
  async function me() {
    var who = await api("GET", "/console/api/me");
    csrf = who.csrf_token;
    return who;
  }
  async function logout() {
    try { await api("POST", "/console/api/logout", {}); } finally { location.href = "/console/login"; }
  }
  function socket(path, onEvent) {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + location.host + path);
    ws.onmessage = function (event) { onEvent(JSON.parse(event.data)); };
    ws.onclose = function (event) {
      if (event.code === 4401) { toLogin(); return; }
      setTimeout(function () { socket(path, onEvent); }, 2000);
    };
    return ws;
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  return { api: api, me: me, logout: logout, socket: socket, el: el };
})();
