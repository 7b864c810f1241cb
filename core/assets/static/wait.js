// "Check your email": wait for another device to approve this browser's
// sign-in, then continue into the app. Each wait is held by the server
// until something is decided or 20 s pass; nothing is written meanwhile.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("other-device");
    var status = document.getElementById("wait-status");
    if (!box || !status || !window.fetch) {
      return;
    }
    var url = box.getAttribute("data-wait");
    var deadline = Date.now() + 1000 * Number(box.getAttribute("data-ttl") || "900");
    var say = function (text, alert) {
      status.textContent = text;
      if (alert) {
        status.setAttribute("role", "alert");
        status.className = "error";
      }
    };
    var again = function (ms) {
      if (Date.now() < deadline) {
        setTimeout(poll, ms);
      } else {
        say("This sign-in has expired. Ask for a new link.", true);
      }
    };
    function poll() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 429) {
            return { state: "waiting", retry_after: Number(r.headers.get("Retry-After") || "10") };
          }
          return r.json();
        })
        .then(function (s) {
          switch (s.state) {
            case "approved":
              say("Approved. Signing you in…", false);
              window.location.assign(s["continue"]);
              return;
            case "cancelled":
              say(s.reason === "wrong_number"
                ? "The sign-in was cancelled: another number was picked on the other device. Ask for a new link if it was you."
                : "The sign-in was cancelled on the other device.", true);
              return;
            case "used":
              say("This sign-in was used on another device. To sign in here, ask for a new link or type the code.", true);
              return;
            case "expired":
              say("This sign-in has expired. Ask for a new link.", true);
              return;
            case "none":
              return;
            default:
              again(1000 * (s.retry_after || 0.2));
          }
        })
        .catch(function () {
          again(3000);
        });
    }
    poll();
  });
})();
