#!/usr/bin/env python3
"""Latency proxy: terminates TLS, adds RTT/2 each way, counts HTTP requests, can throttle PUTs.

    client --TLS--> [this proxy: delay, count, maybe 503] --plain HTTP, keep-alive--> S3 server

Every byte from the client waits RTT/2 before the proxy reads it (TLS handshake records too), and
every byte to the client waits RTT/2 before it is written. Each chunk is scheduled for
arrival + RTT/2 and chunks keep their order, so the delay costs latency, not throughput. A new
connection's first bytes wait one extra RTT: the TCP handshake a real network would charge.

Requests are parsed (request line, Content-Length or chunked framing) only to count them and to
find their ends; bytes are forwarded unchanged, including the Host header the client signed.
With --put-limit N, PUTs beyond N per second (token bucket, burst N) get S3's
`503 SlowDown` error instead of reaching the server.

Control (plain TCP, one line per connection) on --control PORT:
  `stats`            -> JSON counters since the last `stats`, then reset (flushes --trace)
  `set rtt=MS put_limit=N` -> new settings for connections opened from now on (0 = off)

Usage: latency_proxy.py --listen PORT --upstream HOST:PORT --control PORT [--rtt MS]
                        [--put-limit N] [--cert FILE --key FILE] [--trace FILE]
"""
import argparse, asyncio, collections, json, ssl, sys, time

HIGH, LOW = 4 << 20, 1 << 20  # per-direction backlog (queued + transport buffer) that pauses the source
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message>"
            b"<RequestId>%s</RequestId><HostId>latency-proxy</HostId></Error>")


class Settings:
    def __init__(self, rtt_ms, put_limit, trace=None):
        self.rtt, self.put_limit, self.trace = rtt_ms / 1000, put_limit, trace
        self.tokens, self.stamp = float(put_limit), time.monotonic()
        self.reset()

    def reset(self):
        self.stats = collections.Counter()

    def log(self, conn, event, detail=""):
        if self.trace:
            self.trace.write(f"{time.monotonic():.4f} {id(conn):x} {event} {detail}\n")

    def take_put(self):
        """Token bucket: True if this PUT may pass."""
        if not self.put_limit:
            return True
        now = time.monotonic()
        self.tokens = min(self.put_limit, self.tokens + (now - self.stamp) * self.put_limit)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class DelayLine:
    """Hands each chunk to deliver() `delay` seconds after it was put in, in order."""

    def __init__(self, loop, delay, deliver, not_before=0.0):
        self.loop, self.delay, self.deliver, self.not_before = loop, delay, deliver, not_before
        self.queue, self.pending, self.timer = collections.deque(), 0, None
        self.on_empty, self.after = None, None  # flow control; a one-off (close) once drained

    def put(self, data):
        due = max(self.loop.time() + self.delay, self.not_before)
        if due <= self.loop.time() and not self.queue:
            self.deliver(data)
            return
        self.queue.append((due, data))
        self.pending += len(data)
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._run)

    def _run(self):
        self.timer, now = None, self.loop.time() + 0.0005
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.pending -= len(data)
            self.deliver(data)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._run)
            return
        if self.on_empty:
            self.on_empty()
        if self.after:
            self.after, fn = None, self.after
            fn()

    def when_empty(self, fn):
        """Call fn now if nothing is queued, else once the queue drains."""
        if self.queue:
            self.after = fn
        else:
            fn()


class RequestParser:
    """Finds request boundaries in the client's plaintext; forwards, counts, or throttles them."""

    def __init__(self, conn):
        self.conn, self.buf, self.state, self.left, self.drop = conn, b"", "head", 0, False

    def feed(self, data):
        self.buf += data
        while self.buf and self.state != "closed":
            if self.state == "body":
                self._body()
            elif not self._line_state():
                return

    def _body(self):
        part, self.buf = self.buf[:self.left], self.buf[self.left:]
        self.left -= len(part)
        self._out(part)
        if not self.left:
            self.state = "csize" if self.chunked else "head"
            if self.state == "head":
                self._done()

    def _line_state(self):
        """head / csize / trailer: needs a complete line (or header block). False = wait for more."""
        end = b"\r\n\r\n" if self.state == "head" else b"\r\n"
        i = self.buf.find(end)
        if i < 0:
            if len(self.buf) > 1 << 16:
                self.conn.close()
                self.state = "closed"
            return False
        block, self.buf = self.buf[:i + len(end)], self.buf[i + len(end):]
        if self.state == "head":
            self._start(block)
        elif self.state == "csize":
            size = int(block.split(b";")[0].strip() or b"0", 16)
            self._out(block)
            self.state, self.left, self.chunked = ("trailer", 0, True) if size == 0 else ("body", size + 2, True)
        else:  # trailer lines until the empty one
            self._out(block)
            if block == b"\r\n":
                self.state = "head"
                self._done()
        return True

    def _start(self, head):
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        stats = self.conn.settings.stats
        stats["requests"] += 1
        stats[method] += 1
        self.conn.settings.log(self.conn, "request", lines[0].rsplit(" ", 1)[0])
        self.drop = method == "PUT" and not self.conn.settings.take_put()
        self.chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        self.left = 0 if self.chunked else int(hdrs.get("content-length") or 0)
        if self.drop:
            stats["throttled"] += 1
            if "100-continue" in hdrs.get("expect", "").lower():  # the body will not come: answer, close
                self.conn.reply_slowdown(close=True)
                self.state = "closed"
                return
        else:
            self._out(head)
        self.state = "csize" if self.chunked else ("body" if self.left else "head")
        if self.state == "head":
            self._done()

    def _out(self, data):
        if not self.drop and data:
            self.conn.to_upstream(data)

    def _done(self):
        if self.drop:
            self.drop = False
            self.conn.reply_slowdown(close=False)


class ClientConn(asyncio.Protocol):
    """One accepted client connection, paired with one upstream connection."""

    def __init__(self, settings, upstream, ctx):
        self.settings, self.upstream_addr, self.ctx = settings, upstream, ctx
        self.up, self.up_buf, self.closed, self.req_id = None, [], False, 0

    def connection_made(self, transport):
        loop = asyncio.get_running_loop()
        self.t, self.parser = transport, RequestParser(self)
        transport.set_write_buffer_limits(HIGH, LOW)
        rtt = self.settings.rtt
        self.settings.stats["connections"] += 1
        self.settings.log(self, "open")
        # the client's bytes arrive RTT/2 late; the first ones one RTT later still (TCP handshake)
        self.inbound = DelayLine(loop, rtt / 2, self._from_client, loop.time() + 1.5 * rtt)
        self.outbound = DelayLine(loop, rtt / 2, self._write_client)
        self.inbound.on_empty = self.outbound.on_empty = self._flow
        self.tls = None
        if self.ctx:
            self.tls_in, self.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = self.ctx.wrap_bio(self.tls_in, self.tls_out, server_side=True)
        loop.create_task(self._connect(loop))

    async def _connect(self, loop):
        host, port = self.upstream_addr
        try:
            _, self.up = await loop.create_connection(lambda: UpstreamConn(self), host, port)
        except OSError:
            self.close()
            return
        for data in self.up_buf:
            self.up.t.write(data)
        self.up_buf = None

    # ---- client -> upstream
    def data_received(self, data):
        self.settings.stats["bytes_up"] += len(data)
        self.inbound.put(data)
        self._flow()

    def eof_received(self):
        self.inbound.when_empty(self.close)
        return True

    def _from_client(self, data):
        if not self.tls:
            return self.parser.feed(data)
        self.tls_in.write(data)
        try:
            self.tls.do_handshake()  # a no-op once done; SSLWantReadError until then
            while True:
                chunk = self.tls.read(1 << 18)
                if not chunk:  # the client closed the TLS session
                    raise ssl.SSLZeroReturnError
                self.parser.feed(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:  # includes close_notify (SSLZeroReturnError)
            self.outbound.when_empty(self.close)
        self._flush_tls()

    def to_upstream(self, data):
        if self.up_buf is not None:
            self.up_buf.append(data)
        elif self.up:
            self.up.t.write(data)

    # ---- upstream -> client
    def to_client(self, data):
        if self.tls:
            self.tls.write(data)
            data = self.tls_out.read()
        self.outbound.put(data)
        self._flow()

    def _flush_tls(self):
        data = self.tls_out.read()
        if data:
            self.outbound.put(data)

    def _write_client(self, data):
        if not self.t.is_closing():
            self.settings.stats["bytes_down"] += len(data)
            self.t.write(data)

    def reply_slowdown(self, close):
        self.req_id += 1
        body = SLOWDOWN % f"{id(self):x}{self.req_id:06x}".encode()
        head = (f"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                f"x-amz-request-id: {id(self):x}{self.req_id:06x}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n").encode()
        self.to_client(head + body)
        if close:
            self.outbound.when_empty(self.close)

    # ---- flow control and teardown
    def _flow(self):
        """Pause a source while its direction holds more than HIGH bytes; resume under LOW."""
        up_t = self.up.t if self.up else None
        up_back = self.inbound.pending + (up_t.get_write_buffer_size() if up_t else 0)
        down_back = self.outbound.pending + self.t.get_write_buffer_size()
        _pause(self.t, up_back)
        if up_t:
            _pause(up_t, down_back)

    def pause_writing(self):
        pass

    def resume_writing(self):
        self._flow()

    def connection_lost(self, exc):
        self.settings.log(self, "closed", "by client" if not self.closed else "")
        self.closed = True
        if self.up:
            self.up.t.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.t.close()
            if self.up:
                self.up.t.close()


def _pause(transport, backlog):
    if transport.is_closing():
        return
    if backlog > HIGH and transport.is_reading():
        transport.pause_reading()
    elif backlog < LOW and not transport.is_reading():
        transport.resume_reading()


class UpstreamConn(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def connection_made(self, transport):
        self.t = transport
        transport.set_write_buffer_limits(HIGH, LOW)

    def data_received(self, data):
        self.client.to_client(data)

    def pause_writing(self):
        pass

    def resume_writing(self):
        self.client._flow()

    def connection_lost(self, exc):
        self.client.settings.log(self.client, "server closed")
        self.client.outbound.when_empty(self.client.close)


# ---------------------------------------------------------------- control and main
async def control(settings, reader, writer):
    line = (await reader.readline()).decode().split()
    if line[:1] == ["stats"]:
        writer.write(json.dumps(dict(settings.stats)).encode() + b"\n")
        settings.reset()
        if settings.trace:
            settings.log(writer, "stats")
            settings.trace.flush()
    elif line[:1] == ["set"]:
        kv = dict(item.split("=", 1) for item in line[1:])
        settings.rtt = float(kv.get("rtt", settings.rtt * 1000)) / 1000
        settings.put_limit = int(kv.get("put_limit", settings.put_limit))
        settings.tokens, settings.stamp = float(settings.put_limit), time.monotonic()
        writer.write(b"ok\n")
    await writer.drain()
    writer.close()


async def serve(a):
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
    settings = Settings(a.rtt, a.put_limit, a.trace and open(a.trace, "a", buffering=1 << 16))
    host, _, port = a.upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientConn(settings, (host, int(port)), ctx),
                                      "127.0.0.1", a.listen, backlog=1024)
    ctl = await asyncio.start_server(lambda r, w: control(settings, r, w), "127.0.0.1", a.control)
    print(f"listening on 127.0.0.1:{a.listen} ({'https' if ctx else 'http'}), control {a.control}",
          file=sys.stderr, flush=True)
    async with server, ctl:
        await asyncio.gather(server.serve_forever(), ctl.serve_forever())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the plain-HTTP S3 server")
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--rtt", type=float, default=0, help="round-trip time to add, in ms")
    ap.add_argument("--put-limit", type=int, default=0, help="PUTs per second before 503 SlowDown (0 = off)")
    ap.add_argument("--cert", help="server certificate chain (PEM); without it the proxy speaks plain HTTP")
    ap.add_argument("--key")
    ap.add_argument("--trace", metavar="FILE", help="append one line per connection event and request")
    try:
        asyncio.run(serve(ap.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
