// licsync status page: live refresh of the live region without a full reload.
// Every few seconds (body[data-refresh-seconds]) it fetches the same URL with the header
// "X-Licsync-Fragment: live" and replaces the contents of #live with the server's HTML
// (already escaped there). When the session has ended, the server redirects to the sign-in
// page and this script goes there. Without JavaScript the pages work; only this refresh stops.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var seconds = parseInt(document.body.getAttribute("data-refresh-seconds"), 10);
  if (!live || !(seconds > 0) || !window.fetch) {
    return;
  }
  var busy = false;
  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Licsync-Fragment": "live" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "follow"
    }).then(function (response) {
      if (response.redirected) {
        // The session has ended: the server sent the sign-in page.
        window.location.assign(response.url);
        return null;
      }
      // Anything but the live region (storage down, a proxy's error page) leaves the page as
      // it is; the next tick tries again.
      if (!response.ok || response.headers.get("X-Licsync-Fragment") !== "live") {
        return null;
      }
      return response.text();
    }).then(function (html) {
      if (html !== null && html !== undefined) {
        live.innerHTML = html;
        document.body.setAttribute("data-refreshed-at", String(Date.now()));
      }
    }).catch(function () {
      // The control plane is unreachable for now; the next tick tries again.
    }).then(function () {
      busy = false;
    });
  }
  window.setInterval(refresh, seconds * 1000);
}());
