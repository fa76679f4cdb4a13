// An SMSC for loa's tests and benchmark, built on the npm `smpp` library (farhadi/node-smpp):
// our script, their PDU codec, framing and sessions, so loa is checked against an SMPP
// implementation it did not write.
//
//   node smpp_server.js <port> [--record] [--receipts] [--hold-ms N] [--password P]
//                              [--receipt-ids decimal] [--undeliverable-suffix S]
//
// Prints `{"event":"listening","port":N}` once it accepts binds (port 0 takes a free one).
// --record      one JSON line per bind, per whole message (long ones reassembled, decoded by the
//               library's own GSM 03.38 / Latin-1 / UCS-2 decoders) and per closed session
// --receipts    a delivery receipt (deliver_sm, esm_class 0x04) after each accepted part that
//               asked for one: appendix-B text plus receipted_message_id and message_state
// --hold-ms N   answer each submit_sm N ms late, to see how many a client keeps in flight
// --password P  refuse binds with another password (ESME_RINVPASWD)
// --receipt-ids decimal   submit_sm_resp ids in hex, receipt ids in decimal (some carriers)
// --undeliverable-suffix S   destinations ending in S get an UNDELIV receipt
// A line `stats` on a piped stdin prints {"event":"stats",...}: submits, binds, open sessions;
// closing that pipe stops the server.
'use strict';

const fs = require('fs');
const readline = require('readline');
const smpp = require('smpp');

const args = process.argv.slice(2);
const port = Number(args[0] || 2775);
const flag = (name) => args.includes(name);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? args[at + 1] : fallback;
};
const record = flag('--record');
const receipts = flag('--receipts');
const holdMs = Number(option('--hold-ms', '0'));
const password = option('--password', null);
const decimalReceipts = option('--receipt-ids', 'hex') === 'decimal';
const undeliverableSuffix = option('--undeliverable-suffix', null);

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');

let nextId = 0x10000; // message ids: hex in submit_sm_resp
let nextSession = 0;
let submits = 0;
let binds = 0;
let open = 0;
const partial = new Map(); // (session, source, destination, reference) -> parts by number
const receivers = new Map(); // system_id -> sessions bound as receiver or transceiver

function stamp(date) {
  const two = (n) => String(n).padStart(2, '0');
  return (
    two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) + two(date.getUTCDate()) +
    two(date.getUTCHours()) + two(date.getUTCMinutes())
  );
}

// The text of a short_message or message_payload as the library decoded it.
function textOf(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  return typeof value.message === 'string' ? value.message : value.message.toString('latin1');
}

// The concatenation header of a part: [reference, total, number], from UDH or SAR TLVs.
function concatenation(pdu) {
  const sm = pdu.short_message;
  if (sm && sm.udh) {
    for (const element of sm.udh) {
      if (element[0] === 0x00) return [element[2], element[3], element[4]];
      if (element[0] === 0x08) return [element.readUInt16BE(2), element[4], element[5]];
    }
  }
  if (pdu.sar_total_segments) {
    return [pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum];
  }
  return null;
}

function recordMessage(session, pdu, messageId) {
  const text = textOf(pdu.message_payload) || textOf(pdu.short_message);
  const base = {
    event: 'message',
    session: session.number,
    system_id: session.systemId,
    source_addr: pdu.source_addr,
    source_addr_ton: pdu.source_addr_ton,
    source_addr_npi: pdu.source_addr_npi,
    destination_addr: pdu.destination_addr,
    dest_addr_ton: pdu.dest_addr_ton,
    dest_addr_npi: pdu.dest_addr_npi,
    data_coding: pdu.data_coding,
    esm_class: pdu.esm_class,
    registered_delivery: pdu.registered_delivery,
  };
  const concat = concatenation(pdu);
  if (!concat) {
    emit({ ...base, text, parts: 1, ids: [messageId], payload: !!pdu.message_payload });
    return;
  }
  const [reference, total, number] = concat;
  const key = [session.number, pdu.source_addr, pdu.destination_addr, reference].join('|');
  const parts = partial.get(key) || new Map();
  parts.set(number, { text, id: messageId });
  partial.set(key, parts);
  if (parts.size < total) return;
  partial.delete(key);
  const ordered = [];
  for (let n = 1; n <= total; n++) ordered.push(parts.get(n) || { text: '', id: null });
  emit({
    ...base,
    text: ordered.map((part) => part.text).join(''),
    parts: total,
    reference,
    concatenation: pdu.short_message && pdu.short_message.udh ? 'udh' : 'sar',
    ids: ordered.map((part) => part.id),
  });
}

// Receipts go back on the submitting session when it may receive (a transceiver), else on a
// receiver bind of the same system_id, as an SMSC routes them.
function receiptSession(session) {
  if (session.canReceive) return session;
  const bound = receivers.get(session.systemId) || [];
  return bound.length ? bound[0] : null;
}

function sendReceipt(session, pdu, messageId) {
  const target = receiptSession(session);
  if (target === null) return;
  const failed = undeliverableSuffix !== null && pdu.destination_addr.endsWith(undeliverableSuffix);
  const id = decimalReceipts ? String(parseInt(messageId, 16)) : messageId;
  const now = stamp(new Date());
  const text =
    `id:${id} sub:001 dlvrd:${failed ? '000' : '001'} submit date:${now} done date:${now} ` +
    `stat:${failed ? 'UNDELIV' : 'DELIVRD'} err:${failed ? '001' : '000'} text:`;
  target.deliver_sm({
    source_addr: pdu.destination_addr,
    source_addr_ton: 1,
    source_addr_npi: 1,
    destination_addr: pdu.source_addr,
    esm_class: 0x04,
    data_coding: 0x01, // IA5: the receipt text is ASCII
    short_message: Buffer.from(text, 'ascii'),
    receipted_message_id: id,
    message_state: failed ? 5 : 2,
  });
}

// Responses to the PDUs of one read leave in one write, as an SMSC under load would send them:
// the library writes each PDU on its own, one system call per response otherwise.
function corkUntilNextTick(socket) {
  if (socket.writableCorked) return;
  socket.cork();
  process.nextTick(() => socket.uncork());
}

const server = smpp.createServer((session) => {
  // without this Nagle holds every small response back until the previous one is acknowledged
  session.socket.setNoDelay(true);
  session.number = ++nextSession;
  session.systemId = '';
  session.outstanding = 0;
  session.maxOutstanding = 0;
  session.submits = 0;
  open += 1;

  const bind = (pdu) => {
    if (password !== null && pdu.password !== password) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
      if (record) emit({ event: 'refused', session: session.number, system_id: pdu.system_id });
      return;
    }
    binds += 1;
    session.systemId = pdu.system_id;
    session.canReceive = pdu.command !== 'bind_transmitter';
    if (session.canReceive) {
      if (!receivers.has(pdu.system_id)) receivers.set(pdu.system_id, []);
      receivers.get(pdu.system_id).push(session);
    }
    session.send(pdu.response({ system_id: 'NODESMSC' }));
    if (record) {
      emit({ event: 'bind', session: session.number, command: pdu.command, system_id: pdu.system_id });
    }
  };
  session.on('bind_transceiver', bind);
  session.on('bind_transmitter', bind);
  session.on('bind_receiver', bind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('deliver_sm_resp', () => {});
  session.on('unknown', (pdu) => session.send(pdu.response()));

  session.on('submit_sm', (pdu) => {
    corkUntilNextTick(session.socket);
    submits += 1;
    session.submits += 1;
    const messageId = (nextId++).toString(16);
    const answer = () => {
      session.outstanding -= 1;
      session.send(pdu.response({ message_id: messageId }));
      if (record) recordMessage(session, pdu, messageId);
      if (receipts && pdu.registered_delivery & 0x01) sendReceipt(session, pdu, messageId);
    };
    session.outstanding += 1;
    session.maxOutstanding = Math.max(session.maxOutstanding, session.outstanding);
    if (holdMs > 0) setTimeout(answer, holdMs);
    else answer();
  });

  session.on('error', () => {}); // a client that vanishes is not the server's problem
  session.on('close', () => {
    open -= 1;
    const bound = receivers.get(session.systemId) || [];
    if (bound.includes(session)) bound.splice(bound.indexOf(session), 1);
    if (record) {
      emit({
        event: 'closed',
        session: session.number,
        system_id: session.systemId,
        submits: session.submits,
        max_outstanding: session.maxOutstanding,
      });
    }
  });
});

server.on('error', (error) => {
  process.stderr.write(`smpp_server: ${error.message}\n`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => emit({ event: 'listening', port: server.address().port }));

// A parent that talks to us through a pipe (the tests, the benchmark) ends us by closing it,
// or by dying; run by hand (a terminal or /dev/null on stdin) the server stays up.
if (fs.fstatSync(0).isFIFO()) {
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'stats') emit({ event: 'stats', submits, binds, open });
  });
  process.stdin.on('end', () => process.exit(0));
}
process.on('SIGTERM', () => process.exit(0));
