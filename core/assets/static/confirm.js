(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form#confirm");
    if (!form || form.getAttribute("data-auto") !== "1") {
      return;
    }
    var button = form.querySelector("button");
    if (button) {
      button.disabled = true;
    }
    form.submit();
  });
})();
