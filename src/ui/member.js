// A member of a distributed job: the shards it runs now, each linking to
// that shard job's own page (under shard/<shard job>/). Polls once a second.
"use strict";

const $ = (id) => document.getElementById(id);

function cell(tr, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = String(content);
  tr.appendChild(td);
}

async function tick() {
  try {
    const r = await fetch("api/member", { cache: "no-store" });
    const m = await r.json();
    $("member").textContent = m.member_id;
    $("summary").textContent = `${m.shards.length} shard(s) now; ${m.takeovers} taken over, ${m.released} released, ${m.rebalances} rebalance(s) since it joined (group generation ${m.generation}); ${m.finished} finished`;
    const rows = m.shards.map((s) => {
      const tr = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `shard/${encodeURIComponent(s.job)}/`;
      link.textContent = "open";
      cell(tr, s.shard); cell(tr, s.job); cell(tr, s.restored_from ?? "–"); cell(tr, s.takeover_s.toFixed(2)); cell(tr, link);
      return tr;
    });
    $("shards").tBodies[0].replaceChildren(...rows);
  } catch (e) {
    $("summary").textContent = "connection lost: the last state is shown";
  }
  setTimeout(tick, 1000);
}

tick();
