/* Progressive enhancement for the booking pages; every page works without it.
   - the hold timer counts down (the server already printed when the hold ends);
   - the slot picker keeps one day open at a time.
   No text lives here: the words are in the templates, this only shows, hides and counts. */
(function () {
  "use strict";

  function countdown(box) {
    var left = parseInt(box.getAttribute("data-hold-seconds"), 10);
    var out = box.querySelector("[data-countdown]");
    if (!out || !(left > 0)) return;
    var wrapper = out.closest(".countdown");
    var lapsed = box.querySelector("[data-hold-lapsed]");
    var ends = Date.now() + left * 1000;
    if (wrapper) wrapper.hidden = false;
    function tick() {
      var seconds = Math.max(0, Math.round((ends - Date.now()) / 1000));
      out.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
      if (seconds > 0) {
        window.setTimeout(tick, 1000);
      } else {
        if (wrapper) wrapper.hidden = true;
        if (lapsed) lapsed.hidden = false;
      }
    }
    tick();
  }

  function oneDayOpen(picker) {
    var days = picker.querySelectorAll("details.day");
    days.forEach(function (day) {
      day.addEventListener("toggle", function () {
        if (!day.open) return;
        days.forEach(function (other) {
          // Never close the day holding the chosen time: the choice would vanish from view.
          if (other !== day && !other.querySelector("input:checked")) other.open = false;
        });
      });
    });
  }

  // After a failed submit, start from the list of problems (it links to each field).
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();

  document.querySelectorAll("[data-hold-seconds]").forEach(countdown);
  document.querySelectorAll(".slot-form").forEach(oneDayOpen);
})();
