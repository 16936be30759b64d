// Invitations from the page: the host (a premium dev user) clicks Invite,
// moves into the watch party's room at its position, and an invitee who
// opens the link (another browser context: another user) accepts it and lands
// on the host's position.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eventId,
  openWatch,
  probe,
  record,
  sampleSkew,
  summarize,
  waitFor,
  waitSteady,
  useLockstep,
} from './support/harness.js';

const env = useLockstep();

test("an invitee accepts the host's invitation from the page and lands on the host's position", { timeout: 120_000 }, async (t) => {
  const ev = eventId('invite');
  const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
  assert.equal((await probe(host)).role, 'host');
  await host.click('#play');
  await host.click('#fwd10');
  await host.click('#fwd10');
  await waitFor(host, () => lockstepDemo.video.currentTime > 20, null, { what: 'the host past 20 s (two quick +10 s clicks add up)', timeoutMs: 5000 });
  const beforeInvite = await probe(host);

  await host.click('#invite');
  await waitFor(host, () => lockstepDemo.invite !== null && lockstepDemo.roomId.includes('~') && lockstepDemo.session.status === 'open', null, {
    what: "the host to move into the watch party's room",
  });
  const link = await host.getAttribute('#invite-link', 'href');
  const invite = await host.evaluate(() => lockstepDemo.invite);
  assert.ok(link && link.startsWith(`${env.server.url}/watch/${ev}?invite=`), `link ${link}`);
  assert.equal(await host.isVisible('#invite-link'), true, 'the link is shown');
  await waitFor(host, () => !lockstepDemo.session.timeline.paused, null, { what: "the party's room to play" });
  const moved = await probe(host);
  assert.equal(moved.room, invite.roomId);
  assert.equal(moved.role, 'host', "the inviter hosts the party's room");
  assert.equal(moved.roomPaused, false, 'still playing');
  assert.ok(/** @type {number} */ (moved.roomPos) >= beforeInvite.pos - 0.5, `the party's room kept the host's position (${moved.roomPos} vs ${beforeInvite.pos})`);
  assert.equal(new URL(host.url()).pathname, `/watch/${encodeURIComponent(invite.roomId)}`);

  const invitee = await openWatch(env.browser, /** @type {string} */ (link));
  const joined = await probe(invitee);
  const hostNow = await probe(host);
  assert.equal(joined.room, invite.roomId, "the invitee is in the host's room");
  assert.equal(joined.role, 'viewer');
  assert.notEqual(await invitee.evaluate(() => lockstepDemo.user), await host.evaluate(() => lockstepDemo.user), 'another user');
  assert.equal(new URL(invitee.url()).search.includes('invite='), false, 'a reload would not spend the invitation again');
  // The room position the invitee got is the host's.
  assert.ok(Math.abs(/** @type {number} */ (joined.roomPos) - /** @type {number} */ (hostNow.roomPos)) < 0.25, `${joined.roomPos} vs ${hostNow.roomPos}`);
  await waitFor(host, () => document.getElementById('viewers')?.textContent === '2', null, { what: 'two viewers in the party' });

  // And the element gets there.
  await waitSteady([host, invitee], { timeoutMs: 15_000 });
  const skews = await sampleSkew(host, invitee, { n: 100 });
  const s = summarize(skews);
  record(t, 'invite', { room: invite.roomId, landedAt: joined.roomPos, hostAt: hostNow.roomPos, ...s });
  assert.ok((await probe(invitee)).pos > 20, 'not from the start');
  assert.ok(s.p95Ms < 100, `p95 skew ${s.p95Ms} ms`);
  assert.deepEqual([...host.pageErrors, ...invitee.pageErrors], []);
});
