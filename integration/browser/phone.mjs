// Drives the Switchyard phone page in Debian's Chromium (playwright-core) through a list of
// steps, and prints one JSON line per `report` step plus a final {"done": true}. Used by
// tests/browser.rs; run by hand with
//   node phone.mjs '{"url": "...", "audio": "/path/tone.wav", "steps": [...]}'
// Steps: {"wait_status": "registered"}, {"dial": "600"}, {"wait_call": "in call"},
// {"sleep": ms}, {"keys": "123"}, {"click": "#hangup"}, {"report": "name"},
// {"screenshot": "/path.png"}, {"close": true} (closes the tab, ending the run).
import { chromium } from 'playwright-core';

const plan = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${plan.audio}`,
    // The server's ICE candidate is on loopback in tests.
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    // A test's self-signed certificate for wss:.
    ...(plan.insecure ? ['--ignore-certificate-errors'] : []),
  ],
});
const page = await browser.newPage();
if (process.env.JSSIP_DEBUG) await page.addInitScript(() => localStorage.setItem('debug', 'JsSIP:*'));
page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
page.on('pageerror', (e) => process.stderr.write(`[page error] ${e}\n`));
const state = () => page.evaluate(() => ({ ...window.switchyardPhone, log: window.switchyardPhone.log.slice(-8) }));
async function waitFor(field, want, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const s = await state();
    if (String(s[field]).startsWith(want)) return s;
    if (Date.now() > end) throw new Error(`timed out waiting for ${field}=${want}: ${JSON.stringify(s)}`);
    await page.waitForTimeout(100);
  }
}
try {
  await page.goto(plan.url);
  for (const step of plan.steps) {
    if (step.wait_status) await waitFor('status', step.wait_status, step.ms);
    else if (step.wait_call) await waitFor('call', step.wait_call, step.ms);
    else if (step.dial) {
      await page.fill('#number', step.dial);
      await page.click('#dial');
    } else if (step.sleep) await page.waitForTimeout(step.sleep);
    else if (step.keys) {
      for (const k of step.keys) {
        await page.click(`#keypad button[data-key="${k}"]`);
        await page.waitForTimeout(400);
      }
    } else if (step.click) await page.click(step.click);
    else if (step.report) console.log(JSON.stringify({ report: step.report, state: await state() }));
    else if (step.screenshot) await page.screenshot({ path: step.screenshot, fullPage: true });
    else if (step.close) {
      // The tab goes away mid-call, as when a user closes it: no BYE, the WebSocket drops.
      await page.close();
      break;
    }
  }
  console.log(JSON.stringify({ done: true }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e), state: await state().catch(() => null) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
