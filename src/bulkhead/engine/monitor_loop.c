/*
 * bh-monitor: the steady-state event loop of a bulkhead container monitor.
 *
 * The Python monitor (bulkhead.engine.monitor) does the set-up -- runtime
 * create, the listening sockets, the log path, the OOM baseline, the reply to
 * its spawner -- and then execve()s this program, which keeps its pid, the
 * fds named on the command line and its children (the container's init stays
 * our child; we stay a child subreaper and session leader). From then on this
 * program does what Monitor.run() and Monitor.finish() do, byte for byte on
 * the wire and in the files:
 *
 *   - copies the container's output to the json-file log (JsonLogWriter's
 *     format and rotation) and to attached clients (Docker's 8-byte frames,
 *     raw with a tty), with the same backpressure;
 *   - serves ctl.sock (ping, start, kill, resize, exec -- forwarded to the
 *     monitor zygote with the client's fd) and attach.sock;
 *   - reaps children; when the init exited, drains the output, writes
 *     exit.json, closes the clients gracefully, asks the zygote to delete the
 *     runtime container, and exits.
 *
 * Interface (see notes/monitor-loop-brief.md):
 *
 *   bh-monitor --id ID --state-dir DIR --init-pid PID
 *              --fd-ctl N --fd-attach N --fd-out N [--fd-err N]
 *              [--fd-stdin N] [--fd-master N] --tty 0|1 --stdin-once 0|1
 *              [--log-path PATH --log-max-size BYTES --log-max-files N]
 *              [--oom-cgroup DIR --oom-base N]
 *              [--start-fifo PATH] [--start-arg ARG]...
 *              [--kill-all-arg ARG]... [--cgroup-procs PATH]
 *              --zygote-socket PATH [--delete-arg ARG]...
 *
 *              [--fd-helper N --fd-reply N --monitor-start N [--stdin-open 0|1]]
 *
 * --fd-helper: the early hand-over (the in-process runtime). The runtime's create still runs
 * in the Python monitor's helper, which answers on this socket ({"pid", "fifo"} and, with a
 * tty, the pty master; or {"error", "kind"}); we then do the rest of the monitor's set-up:
 * monitor.json (with --monitor-start), the reply to the spawner on --fd-reply, the OOM
 * baseline and the kill through the memory cgroup's cgroup.procs (else --kill-all-arg), the
 * start through the answer's exec.fifo (else --start-arg). No --init-pid, --fd-master,
 * --oom-cgroup then; with a tty no --fd-out (--stdin-open: the master is stdin too).
 *
 * --delete-arg: what to execve() at the very end when the zygote could not be asked to delete
 * the runtime container (unreachable, or it closed without a reply): e.g. python3 -m
 * bulkhead.engine.monitor delete STATE_DIR. Absent: the failure is only noted in monitor.log.
 * exec_resize on ctl.sock is answered as the Python monitor answers for an exec it does not run.
 *
 * One file, C11 + glibc, no dependencies; single-threaded poll() loop.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ constants */

#define CHUNK (128 * 1024)            /* one read of the container's output */
#define PIPE_SIZE (1 << 20)           /* the output pipes' capacity (pipe-max-size's default) */
#define MAX_MESSAGE (16 * 1024)       /* jsonlog.MAX_MESSAGE */
#define HIGH_WATER (1 << 20)          /* monitor._HIGH_WATER */
#define LOW_WATER (256 << 10)         /* monitor._LOW_WATER */
#define MAX_CLIENT_BUFFER (64 << 20)  /* monitor._MAX_CLIENT_BUFFER */
#define DRAIN_NS (2000000000LL)       /* monitor._DRAIN_SECONDS */
#define LINGER_NS (5000000000LL)      /* monitor._LINGER */
#define DELETE_NS (30000000000LL)     /* how long the zygote's delete reply is awaited */
#define CTL_MAX_LINE (4 << 20)        /* a ctl request line longer than this: closed */
#define ATTACH_MAX_HEADER 65536       /* an attach header longer than this: closed */
#define PENDING_CAP (128 * 1024)      /* the log's queued lines (>= 6 * MAX_MESSAGE + slack) */

/* ------------------------------------------------------------------ utilities */

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void complain(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

static void oom_abort(void) {
    complain("bh-monitor: out of memory");
    abort();
}

/* A byte buffer with a consumed head. */
typedef struct {
    char *p;
    size_t off, len, cap;
} buf_t;

static char *buf_data(buf_t *b) { return b->p + b->off; }

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off + b->len + extra <= b->cap)
        return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len);
        b->off = 0;
        if (b->len + extra <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        oom_abort();
    b->p = p;
    b->cap = cap;
}

static void buf_add(buf_t *b, const void *data, size_t n) {
    if (!n)
        return;
    buf_reserve(b, n);
    memcpy(b->p + b->off + b->len, data, n);
    b->len += n;
}

static void buf_addc(buf_t *b, char c) { buf_add(b, &c, 1); }

static void buf_adds(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_addf(buf_t *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

static void buf_clear(buf_t *b) {
    /* Give big buffers back: a monitor is idle most of its life. */
    if (b->cap > 65536)
        buf_free(b);
    b->off = b->len = 0;
}

static void buf_consume(buf_t *b, size_t n) {
    if (n >= b->len) {
        buf_clear(b);
        return;
    }
    b->off += n;
    b->len -= n;
}

/* NUL-terminated copy of a buffer's contents (in the buffer). */
static const char *buf_cstr(buf_t *b) {
    buf_reserve(b, 1);
    b->p[b->off + b->len] = 0;
    return buf_data(b);
}

static const char *errno_class(int e) {
    switch (e) {
    case EPERM:
    case EACCES:
        return "PermissionError";
    case ENOENT:
        return "FileNotFoundError";
    case ESRCH:
        return "ProcessLookupError";
    case EAGAIN:
        return "BlockingIOError";
    case EPIPE:
        return "BrokenPipeError";
    default:
        return "OSError";
    }
}

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at s (CPython's decoder rules; with surrogatepass, encoded
 * surrogates are valid too), 0 if none. *bad is set to how many bytes form the maximal invalid
 * subpart (>= 1). */
static size_t utf8_seq_sp(const unsigned char *s, size_t n, size_t *bad, bool surrogatepass) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED) {
        need = 2;
        hi = surrogatepass ? 0xBF : 0x9F;
    } else if (c == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else
        return 0;
    size_t j = 1;
    for (size_t k = 0; k < need; k++, j++) {
        if (j >= n) {
            *bad = j;
            return 0;
        }
        unsigned b = s[j];
        unsigned l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
        if (b < l || b > h) {
            *bad = j;
            return 0;
        }
    }
    return j;
}

static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    return utf8_seq_sp(s, n, bad, false);
}

/* Whether s decodes as json.loads decodes bytes (UTF-8, surrogatepass); else a Python-like
 * UnicodeDecodeError message. */
static bool utf8_valid(const unsigned char *s, size_t n, char *why, size_t whysz) {
    size_t i = 0, bad;
    while (i < n) {
        size_t l = utf8_seq_sp(s + i, n - i, &bad, true);
        if (l) {
            i += l;
            continue;
        }
        const char *reason = "invalid start byte";
        unsigned c = s[i];
        if (c >= 0xC2 && c <= 0xF4) /* a lead byte: it was what followed */
            reason = i + bad >= n ? "unexpected end of data" : "invalid continuation byte";
        if (bad == 1)
            snprintf(why, whysz, "'utf-8' codec can't decode byte 0x%02x in position %zu: %s", c,
                     i, reason);
        else
            snprintf(why, whysz, "'utf-8' codec can't decode bytes in position %zu-%zu: %s", i,
                     i + bad - 1, reason);
        return false;
    }
    return true;
}

/* Decode one code point of (loosely valid) UTF-8, surrogates included. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80 || *i + 1 >= n) {
        (*i)++;
        return c;
    }
    if (c < 0xE0) {
        uint32_t cp = ((c & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
        return cp;
    }
    if (c < 0xF0 && *i + 2 < n) {
        uint32_t cp = ((c & 0x0F) << 12) | ((s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
        return cp;
    }
    if (*i + 3 < n) {
        uint32_t cp = ((c & 0x07) << 18) | ((s[*i + 1] & 0x3F) << 12) |
                      ((s[*i + 2] & 0x3F) << 6) | (s[*i + 3] & 0x3F);
        *i += 4;
        return cp;
    }
    (*i)++;
    return c;
}

static void utf8_put(buf_t *b, uint32_t cp) {
    char u[4];
    if (cp < 0x80) {
        buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        buf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        buf_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        buf_add(b, u, 4);
    }
}

/* Python's json.dumps (ensure_ascii) of a UTF-8 string, quotes included. */
static void json_str_ascii(buf_t *b, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    buf_addc(b, '"');
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            buf_addc(b, (char)c);
            i++;
            continue;
        }
        uint32_t cp = utf8_next(s, n, &i);
        switch (cp) {
        case '"':
            buf_adds(b, "\\\"");
            break;
        case '\\':
            buf_adds(b, "\\\\");
            break;
        case '\n':
            buf_adds(b, "\\n");
            break;
        case '\r':
            buf_adds(b, "\\r");
            break;
        case '\t':
            buf_adds(b, "\\t");
            break;
        case '\b':
            buf_adds(b, "\\b");
            break;
        case '\f':
            buf_adds(b, "\\f");
            break;
        default:
            if (cp >= 0x10000) {
                cp -= 0x10000;
                buf_addf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                buf_addf(b, "\\u%04x", cp);
            }
        }
    }
    buf_addc(b, '"');
}

/* msgspec's JSON string body (no quotes) of bytes decoded with errors="replace"; writes to out,
 * which must have room for 6 * n bytes. Returns the length written. */
static size_t json_str_msgspec(char *out, const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    size_t i = 0, bad;
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_seq(s + i, n - i, &bad);
            if (l) {
                memcpy(o, s + i, l);
                o += l;
                i += l;
            } else {
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                i += bad;
            }
            continue;
        }
        i++;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    return (size_t)(o - out);
}

/* Docker's json-file string body (no quotes) of a message (jsonlog.json_string_body; moby's
 * ffjsonWriteJSONBytesAsString): control characters as \u00XX except \n and \r; <, >, & as
 * \u003c \u003e \u0026; U+2028/U+2029 escaped; each byte that is not part of valid UTF-8 as the
 * six characters \ufffd (Go's utf8.DecodeRune: one byte at a time). Writes to out, which must
 * have room for 6 * n bytes. Returns the length written. */
static size_t json_str_docker(char *out, const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    /* 1: printable ASCII written as it is (the common case: copied in runs) */
    static const unsigned char plain[128] = {
        [0x20] = 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* not " & */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1,          /* not < > */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,          /* @ A-O */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,          /* not \ */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,          /* ` a-o */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,          /* p-z { | } ~ DEL */
    };
    char *o = out;
    size_t i = 0, bad;
    while (i < n) {
        size_t run = i;
        while (run < n && s[run] < 0x80 && plain[s[run]])
            run++;
        if (run > i) {
            memcpy(o, s + i, run - i);
            o += run - i;
            i = run;
            continue;
        }
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_seq(s + i, n - i, &bad);
            if (!l) {
                memcpy(o, "\\ufffd", 6);
                o += 6;
                i += 1;
            } else if (l == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] & 0xFE) == 0xA8) {
                memcpy(o, "\\u202", 5);
                o[5] = hex[s[i + 2] & 1 ? 9 : 8];
                o += 6;
                i += 3;
            } else {
                memcpy(o, s + i, l);
                o += l;
                i += l;
            }
            continue;
        }
        i++;
        if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        if (c == '"' || c == '\\') {
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = 'n';
        } else if (c == '\r') {
            *o++ = 'r';
        } else {
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
    }
    return (size_t)(o - out);
}

/* Go's time.RFC3339Nano in UTC (jsonlog.log_time, oci.state.rfc3339_nano). */
static size_t rfc3339_nano(char *out, size_t outsz, int64_t ns) {
    time_t secs = (time_t)(ns / 1000000000LL);
    long nanos = (long)(ns % 1000000000LL);
    if (nanos < 0) {
        nanos += 1000000000L;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, outsz, "%Y-%m-%dT%H:%M:%S", &tm);
    if (nanos) {
        char frac[16];
        int k = snprintf(frac, sizeof frac, ".%09ld", nanos);
        while (k > 1 && frac[k - 1] == '0')
            k--;
        frac[k] = 0;
        n += (size_t)snprintf(out + n, outsz - n, "%s", frac);
    }
    n += (size_t)snprintf(out + n, outsz - n, "Z");
    return n;
}

/* ------------------------------------------------------------------ JSON (requests) */

/* A small JSON parser with Python's json.loads' grammar (NaN/Infinity included) and error
 * messages, that can also render a value as Python's repr() for error messages. */
enum { J_STR, J_INT, J_FLOAT, J_TRUE, J_FALSE, J_NULL, J_OBJ, J_ARR };

typedef struct {
    const char *key; /* decoded (in the kv's scratch) */
    size_t keylen;
    int type;
    const char *v; /* raw value span in the line */
    size_t vlen;
} jmember;

#define MAX_MEMBERS 128

typedef struct {
    jmember m[MAX_MEMBERS];
    size_t n;
    bool overflow;
    buf_t scratch;
} jobject;

typedef struct {
    const unsigned char *s;
    size_t n, i;
    size_t base; /* where the text starts (after a BOM) */
    char err[160];
} jparser;

static bool j_fail(jparser *j, const char *what, size_t pos) {
    if (j->err[0])
        return false;
    size_t chars = 0; /* Python counts characters of the decoded text, not bytes */
    for (size_t k = j->base; k < pos && k < j->n; k++)
        chars += (j->s[k] & 0xC0) != 0x80;
    snprintf(j->err, sizeof j->err, "%s: line 1 column %zu (char %zu)", what, chars + 1, chars);
    return false;
}

static void j_ws(jparser *j) {
    while (j->i < j->n) {
        unsigned char c = j->s[j->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        j->i++;
    }
}

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool j_hex4(jparser *j, size_t at, uint32_t *out) {
    if (at + 4 > j->n)
        return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(j->s[at + k]);
        if (h < 0)
            return false;
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return true;
}

/* At a '"': the decoded string (UTF-8, lone surrogates as 3-byte sequences) appended to dec. */
static bool j_string(jparser *j, buf_t *dec) {
    size_t begin = j->i;
    j->i++;
    while (1) {
        if (j->i >= j->n)
            return j_fail(j, "Unterminated string starting at", begin);
        unsigned char c = j->s[j->i];
        if (c == '"') {
            j->i++;
            return true;
        }
        if (c < 0x20)
            return j_fail(j, "Invalid control character at", j->i);
        if (c != '\\') {
            if (dec)
                buf_addc(dec, (char)c);
            j->i++;
            continue;
        }
        if (j->i + 1 >= j->n)
            return j_fail(j, "Unterminated string starting at", begin);
        unsigned char e = j->s[j->i + 1];
        const char *simple = NULL;
        switch (e) {
        case '"':
            simple = "\"";
            break;
        case '\\':
            simple = "\\";
            break;
        case '/':
            simple = "/";
            break;
        case 'b':
            simple = "\b";
            break;
        case 'f':
            simple = "\f";
            break;
        case 'n':
            simple = "\n";
            break;
        case 'r':
            simple = "\r";
            break;
        case 't':
            simple = "\t";
            break;
        }
        if (simple) {
            if (dec)
                buf_addc(dec, simple[0]);
            j->i += 2;
            continue;
        }
        if (e != 'u')
            return j_fail(j, "Invalid \\escape", j->i);
        uint32_t cp;
        if (!j_hex4(j, j->i + 2, &cp))
            return j_fail(j, "Invalid \\uXXXX escape", j->i + 1);
        j->i += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF && j->i + 1 < j->n && j->s[j->i] == '\\' &&
            j->s[j->i + 1] == 'u') {
            uint32_t lo;
            if (!j_hex4(j, j->i + 2, &lo))
                return j_fail(j, "Invalid \\uXXXX escape", j->i + 1);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->i += 6;
            }
        }
        if (dec)
            utf8_put(dec, cp);
    }
}

/* Python's repr() of a (UTF-8) str. */
static void py_repr_str(buf_t *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    char quote = '\'';
    if (memchr(s, '\'', n) && !memchr(s, '"', n))
        quote = '"';
    buf_addc(out, quote);
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        uint32_t cp = utf8_next(s, n, &i);
        if (cp == (uint32_t)quote || cp == '\\') {
            buf_addc(out, '\\');
            buf_addc(out, (char)cp);
        } else if (cp == '\n')
            buf_adds(out, "\\n");
        else if (cp == '\r')
            buf_adds(out, "\\r");
        else if (cp == '\t')
            buf_adds(out, "\\t");
        else if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD)
            buf_addf(out, "\\x%02x", cp);
        else if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) ||
                 (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x2064) ||
                 cp == 0x3000 || cp == 0xFEFF)
            buf_addf(out, "\\u%04x", cp); /* what str.isprintable() says no to, mostly */
        else
            buf_add(out, s + start, i - start);
    }
    buf_addc(out, quote);
}

/* Python's repr() of a float. */
static void py_repr_float(buf_t *out, double d) {
    if (isnan(d)) {
        buf_adds(out, "nan");
        return;
    }
    if (isinf(d)) {
        buf_adds(out, d < 0 ? "-inf" : "inf");
        return;
    }
    char digits[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(digits, sizeof digits, "%.*e", prec - 1, d);
        if (strtod(digits, NULL) == d)
            break;
    }
    /* digits: [-]d[.ddd]e[+-]XX */
    bool neg = digits[0] == '-';
    char *p = digits + neg;
    char mant[32];
    size_t m = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            mant[m++] = *p;
    mant[m] = 0;
    int exp = atoi(p + 1);
    while (m > 1 && mant[m - 1] == '0')
        mant[--m] = 0;
    if (neg)
        buf_addc(out, '-');
    if (exp >= -5 + 1 && exp < 16) {
        if (exp < 0) {
            buf_adds(out, "0.");
            for (int k = 0; k < -exp - 1; k++)
                buf_addc(out, '0');
            buf_adds(out, mant);
        } else {
            for (int k = 0; k <= exp; k++)
                buf_addc(out, (size_t)k < m ? mant[k] : '0');
            buf_addc(out, '.');
            if ((size_t)exp + 1 < m)
                buf_adds(out, mant + exp + 1);
            else
                buf_addc(out, '0');
        }
    } else {
        buf_addc(out, mant[0]);
        if (m > 1) {
            buf_addc(out, '.');
            buf_adds(out, mant + 1);
        }
        buf_addf(out, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static bool j_value(jparser *j, int depth, int *type, buf_t *repr, jobject *obj);

static bool j_literal(jparser *j, const char *word) {
    size_t l = strlen(word);
    if (j->i + l <= j->n && memcmp(j->s + j->i, word, l) == 0) {
        j->i += l;
        return true;
    }
    return false;
}

static bool j_number(jparser *j, int *type, buf_t *repr) {
    size_t start = j->i, i = j->i;
    bool is_float = false;
    if (i < j->n && j->s[i] == '-')
        i++;
    if (i < j->n && j->s[i] == 'I') { /* -Infinity */
        j->i = i;
        if (!j_literal(j, "Infinity"))
            return j_fail(j, "Expecting value", start);
        *type = J_FLOAT;
        if (repr)
            buf_adds(repr, "-inf");
        return true;
    }
    if (i >= j->n || !isdigit(j->s[i]))
        return j_fail(j, "Expecting value", start);
    if (j->s[i] == '0')
        i++;
    else
        while (i < j->n && isdigit(j->s[i]))
            i++;
    if (i + 1 < j->n && j->s[i] == '.' && isdigit(j->s[i + 1])) {
        is_float = true;
        i++;
        while (i < j->n && isdigit(j->s[i]))
            i++;
    }
    if (i < j->n && (j->s[i] == 'e' || j->s[i] == 'E')) {
        size_t k = i + 1;
        if (k < j->n && (j->s[k] == '+' || j->s[k] == '-'))
            k++;
        if (k < j->n && isdigit(j->s[k])) {
            is_float = true;
            while (k < j->n && isdigit(j->s[k]))
                k++;
            i = k;
        }
    }
    j->i = i;
    *type = is_float ? J_FLOAT : J_INT;
    if (repr) {
        char tmp[400];
        size_t l = i - start < sizeof tmp - 1 ? i - start : sizeof tmp - 1;
        memcpy(tmp, j->s + start, l);
        tmp[l] = 0;
        if (is_float)
            py_repr_float(repr, strtod(tmp, NULL));
        else if (strcmp(tmp, "-0") == 0)
            buf_addc(repr, '0');
        else
            buf_add(repr, j->s + start, i - start);
    }
    return true;
}

static bool j_value(jparser *j, int depth, int *type, buf_t *repr, jobject *obj) {
    if (depth > 500)
        return j_fail(j, "maximum recursion depth exceeded", j->i);
    j_ws(j);
    if (j->i >= j->n)
        return j_fail(j, "Expecting value", j->i);
    unsigned char c = j->s[j->i];
    if (c == '"') {
        buf_t dec = {0};
        bool ok = j_string(j, repr ? &dec : NULL);
        if (ok && repr)
            py_repr_str(repr, buf_data(&dec), dec.len);
        buf_free(&dec);
        *type = J_STR;
        return ok;
    }
    if (c == '{') {
        size_t open = j->i;
        j->i++;
        *type = J_OBJ;
        if (repr)
            buf_addc(repr, '{');
        j_ws(j);
        if (j->i < j->n && j->s[j->i] == '}') {
            j->i++;
            if (repr)
                buf_addc(repr, '}');
            return true;
        }
        (void)open;
        bool first = true;
        while (1) {
            j_ws(j);
            if (j->i >= j->n || j->s[j->i] != '"')
                return j_fail(j, "Expecting property name enclosed in double quotes", j->i);
            buf_t key = {0};
            bool ok = j_string(j, &key);
            if (!ok) {
                buf_free(&key);
                return false;
            }
            if (repr) {
                if (!first)
                    buf_adds(repr, ", ");
                py_repr_str(repr, buf_data(&key), key.len);
                buf_adds(repr, ": ");
            }
            first = false;
            j_ws(j);
            if (j->i >= j->n || j->s[j->i] != ':') {
                buf_free(&key);
                return j_fail(j, "Expecting ':' delimiter", j->i);
            }
            j->i++;
            j_ws(j);
            size_t vstart = j->i;
            int vt;
            if (!j_value(j, depth + 1, &vt, repr, NULL)) {
                buf_free(&key);
                return false;
            }
            if (obj) {
                if (obj->n < MAX_MEMBERS) {
                    jmember *m = &obj->m[obj->n++];
                    m->key = (const char *)(uintptr_t)obj->scratch.len; /* offset, fixed below */
                    m->keylen = key.len;
                    buf_add(&obj->scratch, buf_data(&key), key.len);
                    m->type = vt;
                    m->v = (const char *)j->s + vstart;
                    m->vlen = j->i - vstart;
                } else {
                    obj->overflow = true;
                }
            }
            buf_free(&key);
            j_ws(j);
            if (j->i < j->n && j->s[j->i] == '}') {
                j->i++;
                if (repr)
                    buf_addc(repr, '}');
                break;
            }
            if (j->i >= j->n || j->s[j->i] != ',')
                return j_fail(j, "Expecting ',' delimiter", j->i);
            j->i++;
            j_ws(j);
            if (j->i >= j->n || j->s[j->i] != '"')
                return j_fail(j, "Expecting property name enclosed in double quotes", j->i);
        }
        if (obj) /* offsets -> pointers, now that scratch stopped moving */
            for (size_t k = 0; k < obj->n; k++)
                obj->m[k].key = buf_data(&obj->scratch) + (uintptr_t)obj->m[k].key;
        return true;
    }
    if (c == '[') {
        j->i++;
        *type = J_ARR;
        if (repr)
            buf_addc(repr, '[');
        j_ws(j);
        if (j->i < j->n && j->s[j->i] == ']') {
            j->i++;
            if (repr)
                buf_addc(repr, ']');
            return true;
        }
        bool first = true;
        while (1) {
            if (repr && !first)
                buf_adds(repr, ", ");
            first = false;
            int vt;
            if (!j_value(j, depth + 1, &vt, repr, NULL))
                return false;
            j_ws(j);
            if (j->i < j->n && j->s[j->i] == ']') {
                j->i++;
                if (repr)
                    buf_addc(repr, ']');
                return true;
            }
            if (j->i >= j->n || j->s[j->i] != ',')
                return j_fail(j, "Expecting ',' delimiter", j->i);
            j->i++;
        }
    }
    /* The words json.loads takes, and how Python's repr() writes them. */
    static const struct {
        const char *word;
        int type;
        const char *repr;
    } words[] = {{"true", J_TRUE, "True"},   {"false", J_FALSE, "False"}, {"null", J_NULL, "None"},
                 {"NaN", J_FLOAT, "nan"},    {"Infinity", J_FLOAT, "inf"}};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        if (j_literal(j, words[k].word)) {
            *type = words[k].type;
            if (repr)
                buf_adds(repr, words[k].repr);
            return true;
        }
    }
    return j_number(j, type, repr);
}

/* json.loads(line) must give a dict: 0 = ok (members in obj), -1 = not JSON (err set),
 * -2 = JSON but not an object. */
static int j_parse_object(const char *line, size_t n, jobject *obj, char *err, size_t errsz) {
    memset(obj->m, 0, sizeof obj->m);
    obj->n = 0;
    obj->overflow = false;
    buf_clear(&obj->scratch);
    if (!utf8_valid((const unsigned char *)line, n, err, errsz))
        return -1;
    jparser j = {.s = (const unsigned char *)line, .n = n, .i = 0};
    j.err[0] = 0;
    size_t skip = 0;
    if (n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        skip = 3; /* json.loads(bytes) decodes with utf-8-sig */
    j.i = j.base = skip;
    int type;
    bool ok = j_value(&j, 0, &type, NULL, NULL);
    if (ok) {
        j_ws(&j);
        if (j.i != j.n)
            ok = j_fail(&j, "Extra data", j.i);
    }
    if (!ok) {
        snprintf(err, errsz, "%s", j.err);
        return -1;
    }
    if (type != J_OBJ)
        return -2;
    j.i = skip;
    j.err[0] = 0;
    j_value(&j, 0, &type, NULL, obj);
    if (obj->overflow) {
        snprintf(err, errsz, "too many keys in a request");
        return -1;
    }
    return 0;
}

/* The member named key (the last one, as a dict keeps), or NULL. */
static const jmember *j_get(const jobject *obj, const char *key) {
    size_t l = strlen(key);
    for (size_t k = obj->n; k-- > 0;)
        if (obj->m[k].keylen == l && memcmp(obj->m[k].key, key, l) == 0)
            return &obj->m[k];
    return NULL;
}

static void j_repr(buf_t *out, const jmember *m) {
    if (!m) {
        buf_adds(out, "None");
        return;
    }
    jparser j = {.s = (const unsigned char *)m->v, .n = m->vlen, .i = 0};
    int type;
    j_value(&j, 0, &type, out, NULL);
}

/* The decoded string value of a J_STR member (into out, NUL-terminated). */
static const char *j_str(buf_t *out, const jmember *m) {
    buf_clear(out);
    jparser j = {.s = (const unsigned char *)m->v, .n = m->vlen, .i = 0};
    j_string(&j, out);
    return buf_cstr(out);
}

/* Python truthiness of a member (missing: dflt). */
static bool j_truthy(const jmember *m, bool dflt) {
    if (!m)
        return dflt;
    switch (m->type) {
    case J_TRUE:
        return true;
    case J_FALSE:
    case J_NULL:
        return false;
    case J_STR:
        return m->vlen > 2;
    case J_INT:
    case J_FLOAT: {
        char tmp[64];
        size_t l = m->vlen < sizeof tmp - 1 ? m->vlen : sizeof tmp - 1;
        memcpy(tmp, m->v, l);
        tmp[l] = 0;
        if (strcmp(tmp, "NaN") == 0)
            return true;
        return strtod(tmp, NULL) != 0.0 || (m->vlen >= sizeof tmp - 1);
    }
    default: { /* a container: empty or not */
        size_t i = 1;
        while (i < m->vlen && isspace((unsigned char)m->v[i]))
            i++;
        return i < m->vlen && m->v[i] != ']' && m->v[i] != '}';
    }
    }
}

/* A Python int (bool included, as isinstance(x, int)) in [lo, hi]. */
static bool j_int_in(const jmember *m, long lo, long hi, long *out) {
    if (!m)
        return false;
    if (m->type == J_TRUE || m->type == J_FALSE) {
        *out = m->type == J_TRUE;
        return *out >= lo && *out <= hi;
    }
    if (m->type != J_INT || m->vlen > 20)
        return false;
    char tmp[32];
    memcpy(tmp, m->v, m->vlen);
    tmp[m->vlen] = 0;
    errno = 0;
    long long v = strtoll(tmp, NULL, 10);
    if (errno)
        return false;
    *out = (long)v;
    return v >= lo && v <= hi;
}

/* ------------------------------------------------------------------ configuration */

static struct {
    const char *id, *state_dir;
    pid_t init_pid;
    int fd_ctl, fd_attach, fd_out, fd_err, fd_stdin, fd_master;
    bool tty, stdin_once;
    const char *log_path;
    long long log_max_size;
    long log_max_files;
    const char *oom_cgroup;
    long long oom_base;
    const char *start_fifo;
    char **start_argv;
    size_t start_argc;
    char **kill_argv;
    size_t kill_argc;
    const char *cgroup_procs;
    const char *zygote_socket;
    char **delete_argv;
    size_t delete_argc;
    /* early hand-over: the runtime's create still runs in the helper of --fd-helper */
    int fd_helper, fd_reply;
    long long monitor_start;
    bool stdin_open;
} cfg = {.fd_ctl = -1, .fd_attach = -1, .fd_out = -1, .fd_err = -1, .fd_stdin = -1,
         .fd_master = -1, .log_max_files = 1, .fd_helper = -1, .fd_reply = -1};

/* ------------------------------------------------------------------ state */

typedef struct conn conn_t;

enum { K_CTL, K_ATTACH };

struct conn {
    conn_t *next;
    int fd;
    int kind;
    buf_t out;
    buf_t in; /* the request line / attach header being read */
    bool closed, closing, reading;
    int64_t linger_until; /* our side shut down, waiting for the client's EOF (0: not) */
    bool registered;      /* an attach client that got its reply */
    bool want_stdin, want_stdout, want_stderr;
};

typedef struct {
    int fd;
    int stream;
    bool open, paused;
} source_t;

static conn_t *conns;
static char chunk[CHUNK]; /* one read of output or of a client */
static source_t sources[2];
static size_t nsources;

static struct {
    int fd;
    buf_t out;
    bool eof, closed, present;
} sink = {.fd = -1};

static struct {
    int fd;
    size_t size;
    size_t max_size;
    long max_files;
    buf_t partial[3];
    char *pending; /* PENDING_CAP */
    size_t plen;
    bool present;
} lg = {.fd = -1};

static int sigfd = -1;
static bool started, exited, finishing;
static int exit_code = -1;
static int64_t exit_deadline;
static char error_text[512]; /* exit.json's error */
static int64_t accept_pause_until;

static struct {
    int fd; /* the zygote connection waiting for the delete reply */
    buf_t in;
    int64_t deadline;
    bool done;
    bool fallback; /* the zygote could not be asked: run --delete-arg at the end */
} del = {.fd = -1};

static void set_error(const char *fmt, ...) {
    if (error_text[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ json-file log */

static int log_open(bool truncate) {
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
    return open(cfg.log_path, flags, 0640);
}

static void log_write_out(void) {
    size_t off = 0;
    while (off < lg.plen) {
        if (lg.fd < 0) {
            set_error("log: [Errno %d] %s", EBADF, strerror(EBADF));
            break;
        }
        ssize_t n = write(lg.fd, lg.pending + off, lg.plen - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            set_error("log: [Errno %d] %s", errno, strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    lg.plen = 0;
}

static void log_rotate(void) {
    if (lg.fd >= 0)
        close(lg.fd);
    lg.fd = -1;
    size_t pl = strlen(cfg.log_path);
    char *older = malloc(pl + 32), *newer = malloc(pl + 32);
    if (!older || !newer)
        oom_abort();
    if (lg.max_files > 1) {
        for (long i = lg.max_files - 1; i > 1; i--) {
            snprintf(older, pl + 32, "%s.%ld", cfg.log_path, i - 1);
            snprintf(newer, pl + 32, "%s.%ld", cfg.log_path, i);
            if (rename(older, newer) < 0 && errno != ENOENT)
                set_error("log: [Errno %d] %s: '%s' -> '%s'", errno, strerror(errno), older,
                          newer);
        }
        snprintf(newer, pl + 32, "%s.1", cfg.log_path);
        if (rename(cfg.log_path, newer) < 0 && errno != ENOENT)
            set_error("log: [Errno %d] %s: '%s' -> '%s'", errno, strerror(errno), cfg.log_path,
                      newer);
        lg.fd = log_open(false);
    } else {
        lg.fd = log_open(true);
    }
    if (lg.fd < 0)
        set_error("log: [Errno %d] %s: '%s'", errno, strerror(errno), cfg.log_path);
    lg.size = 0;
    free(older);
    free(newer);
}

static void log_emit(int stream, const unsigned char *msg, size_t n, const char *stamp) {
    static const char head[] = "{\"log\":\"";
    const char *mid = stream == 1 ? "\",\"stream\":\"stdout\",\"time\":\""
                                  : "\",\"stream\":\"stderr\",\"time\":\"";
    size_t need = sizeof head + 6 * n + 64 + strlen(stamp);
    if (lg.plen + need > PENDING_CAP)
        log_write_out();
    char *line = lg.pending + lg.plen, *o = line;
    memcpy(o, head, sizeof head - 1);
    o += sizeof head - 1;
    o += json_str_docker(o, msg, n);
    size_t ml = strlen(mid), sl = strlen(stamp);
    memcpy(o, mid, ml);
    o += ml;
    memcpy(o, stamp, sl);
    o += sl;
    memcpy(o, "\"}\n", 3);
    o += 3;
    size_t len = (size_t)(o - line);
    if (lg.max_size && lg.size && lg.size + len > lg.max_size) {
        log_write_out(); /* the lines before this one (lg.plen does not count this one) */
        log_rotate();
        memmove(lg.pending, line, len);
        lg.plen = 0;
        line = lg.pending;
    }
    lg.plen += len;
    lg.size += len;
}

/* JsonLogWriter.write: whole messages of a chunk of output of stream (1, 2). */
static void log_write(int stream, const char *data, size_t n) {
    buf_t *b = &lg.partial[stream];
    buf_add(b, data, n);
    char stamp[48];
    rfc3339_nano(stamp, sizeof stamp, real_ns());
    const unsigned char *s = (const unsigned char *)buf_data(b);
    size_t len = b->len, start = 0;
    while (1) {
        const unsigned char *nl = memchr(s + start, '\n', len - start);
        if (!nl || (size_t)(nl + 1 - s) - start > MAX_MESSAGE) {
            if (len - start >= MAX_MESSAGE) {
                log_emit(stream, s + start, MAX_MESSAGE, stamp);
                start += MAX_MESSAGE;
                continue;
            }
            break;
        }
        size_t end = (size_t)(nl + 1 - s);
        log_emit(stream, s + start, end - start, stamp);
        start = end;
    }
    buf_consume(b, start);
    log_write_out();
}

/* JsonLogWriter.flush: what is left without a newline (stream 0: both). */
static void log_flush(int stream) {
    char stamp[48];
    rfc3339_nano(stamp, sizeof stamp, real_ns());
    for (int s = 1; s <= 2; s++) {
        if (stream && s != stream)
            continue;
        buf_t *b = &lg.partial[s];
        if (b->len) {
            log_emit(s, (const unsigned char *)buf_data(b), b->len, stamp);
            buf_clear(b);
        }
    }
    log_write_out();
}

static void log_init(void) {
    if (!cfg.log_path)
        return;
    lg.present = true;
    lg.max_size = cfg.log_max_size > 0 ? (size_t)cfg.log_max_size : 0;
    lg.max_files = cfg.log_max_files > 1 ? cfg.log_max_files : 1;
    lg.pending = malloc(PENDING_CAP);
    if (!lg.pending)
        oom_abort();
    lg.fd = log_open(false);
    if (lg.fd < 0) {
        set_error("log: [Errno %d] %s: '%s'", errno, strerror(errno), cfg.log_path);
        return;
    }
    struct stat st;
    if (fstat(lg.fd, &st) == 0)
        lg.size = (size_t)st.st_size;
}

static void log_close(void) {
    if (!lg.present)
        return;
    log_flush(0);
    if (lg.fd >= 0)
        close(lg.fd);
    lg.fd = -1;
    lg.present = false;
    free(lg.pending);
    lg.pending = NULL;
    for (int s = 1; s <= 2; s++)
        buf_free(&lg.partial[s]);
}

/* ------------------------------------------------------------------ connections */

static void output_drained(void);

static void conn_close(conn_t *c) {
    if (c->closed)
        return;
    c->closed = true;
    /* Whatever arrived meanwhile (unread input means RST), bounded. */
    char tmp[4096];
    for (int k = 0; k < 64; k++) {
        ssize_t n = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n <= 0)
            break;
    }
    close(c->fd);
    c->fd = -1;
    buf_free(&c->out);
    buf_free(&c->in);
    output_drained();
}

static void conn_shutdown(conn_t *c) {
    if (!c->reading) {
        conn_close(c); /* the client is done sending: nothing can be left unread */
        return;
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_close(c);
        return;
    }
    c->linger_until = mono_ns() + LINGER_NS;
}

static void conn_close_after_flush(conn_t *c) {
    if (c->closed || c->closing)
        return;
    c->closing = true;
    if (!c->out.len)
        conn_shutdown(c);
}

/* Queue (or send right away) a + b. */
static void conn_send2(conn_t *c, const void *a, size_t an, const void *b, size_t bn) {
    if (c->closed || c->closing)
        return;
    if (!c->out.len) {
        struct iovec iov[2] = {{(void *)a, an}, {(void *)b, bn}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = bn ? 2 : 1};
        ssize_t n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_close(c);
                return;
            }
            n = 0;
        }
        size_t sent = (size_t)n;
        if (sent >= an) {
            sent -= an;
            an = 0;
            b = (const char *)b + sent;
            bn -= sent;
        } else {
            a = (const char *)a + sent;
            an -= sent;
        }
        if (!an && !bn)
            return;
    }
    buf_add(&c->out, a, an);
    buf_add(&c->out, b, bn);
    if (c->out.len > MAX_CLIENT_BUFFER)
        conn_close(c);
}

static void conn_send(conn_t *c, const void *a, size_t an) { conn_send2(c, a, an, NULL, 0); }

static void conn_writable(conn_t *c) {
    ssize_t n = send(c->fd, buf_data(&c->out), c->out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    size_t before = c->out.len;
    buf_consume(&c->out, (size_t)n);
    if (before >= LOW_WATER && LOW_WATER > c->out.len)
        output_drained();
    if (!c->out.len && c->closing)
        conn_shutdown(c);
}

static conn_t *conn_new(int fd, int kind) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        oom_abort();
    c->fd = fd;
    c->kind = kind;
    c->reading = true;
    c->next = conns;
    conns = c;
    return c;
}

static void reply_text(conn_t *c, buf_t *b) {
    buf_addc(b, '\n');
    conn_send(c, buf_data(b), b->len);
}

static void reply_error(conn_t *c, const char *message, const char *kind) {
    buf_t b = {0};
    buf_adds(&b, "{\"error\": ");
    json_str_ascii(&b, message, strlen(message));
    buf_adds(&b, ", \"kind\": ");
    json_str_ascii(&b, kind, strlen(kind));
    buf_addc(&b, '}');
    reply_text(c, &b);
    buf_free(&b);
}

static void reply_ok(conn_t *c) { conn_send(c, "{\"ok\": true}\n", 13); }

/* ------------------------------------------------------------------ output */

static void source_pause_all(void) {
    for (size_t k = 0; k < nsources; k++)
        if (sources[k].open)
            sources[k].paused = true;
}

static void output_drained(void) {
    bool any_paused = false;
    for (size_t k = 0; k < nsources; k++)
        any_paused |= sources[k].open && sources[k].paused;
    if (!any_paused)
        return;
    for (conn_t *c = conns; c; c = c->next)
        if (c->kind == K_ATTACH && c->registered && !c->closed && c->out.len >= LOW_WATER)
            return;
    for (size_t k = 0; k < nsources; k++)
        sources[k].paused = false;
}

static void on_output(int stream, const char *data, size_t n) {
    if (lg.present)
        log_write(stream, data, n);
    unsigned char hdr[8] = {(unsigned char)stream, 0, 0, 0, (unsigned char)(n >> 24),
                            (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    bool high = false;
    for (conn_t *c = conns; c; c = c->next) {
        if (c->kind != K_ATTACH || !c->registered || c->closed)
            continue;
        if ((stream == 1 && c->want_stdout) || (stream == 2 && c->want_stderr)) {
            if (cfg.tty)
                conn_send(c, data, n);
            else
                conn_send2(c, hdr, 8, data, n);
        }
        if (!c->closed && c->out.len >= HIGH_WATER)
            high = true;
    }
    if (high)
        source_pause_all();
}

static void source_close(source_t *s) {
    if (!s->open)
        return;
    s->open = false;
    close(s->fd);
    s->fd = -1;
    if (lg.present)
        log_flush(s->stream);
}

/* One read; false when the source closed. */
static bool source_read(source_t *s) {
    ssize_t n = read(s->fd, chunk, sizeof chunk);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return true;
        if (errno != EIO) /* EIO: a pty whose slave side is all closed */
            complain("bh-monitor: read output: %s", strerror(errno));
        n = 0;
    }
    if (n == 0) {
        source_close(s);
        return false;
    }
    on_output(s->stream, chunk, (size_t)n);
    return true;
}

/* Read what is there now without waiting (the process is gone). */
static void source_drain(source_t *s) {
    for (int k = 0; k < 4096 && s->open; k++) {
        ssize_t n = read(s->fd, chunk, sizeof chunk);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            source_close(s);
            return;
        }
        on_output(s->stream, chunk, (size_t)n);
    }
}

/* ------------------------------------------------------------------ stdin sink */

static void sink_close(void) {
    if (!sink.present || sink.closed)
        return;
    sink.closed = true;
    close(sink.fd);
    sink.fd = -1;
    buf_free(&sink.out);
}

static void sink_flush(void) {
    while (sink.out.len) {
        ssize_t n = write(sink.fd, buf_data(&sink.out), sink.out.len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* polled for POLLOUT */
            sink_close();
            return;
        }
        buf_consume(&sink.out, (size_t)n);
    }
    if (sink.eof)
        sink_close();
}

static void sink_write(const char *data, size_t n) {
    if (!sink.present || sink.closed || sink.eof)
        return;
    buf_add(&sink.out, data, n);
    sink_flush();
}

static void sink_close_after_flush(void) {
    if (!sink.present || sink.closed)
        return;
    sink.eof = true;
    if (!sink.out.len)
        sink_close();
}

/* ------------------------------------------------------------------ children */

static void reap(void) {
    while (1) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        if (pid == cfg.init_pid && !exited) {
            int code = WIFEXITED(status) ? WEXITSTATUS(status)
                       : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                             : 255;
            exited = true;
            exit_code = code;
            exit_deadline = mono_ns() + DRAIN_NS;
        }
    }
}

static sigset_t handled;

/* For a program we start: every signal at its default disposition and none blocked (what
 * subprocess's restore_signals does for the SIGPIPE/SIGXFSZ a Python parent ignored). */
static void default_signals(void) {
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    /* glibc's sigaction() refuses its two internal signals (32, 33), which its posix_spawn
     * leaves ignored in the child (GNU make starts commands so): the raw syscall resets them.
     * A zeroed kernel sigaction is SIG_DFL, no flags, empty mask on every architecture. */
    unsigned long kernel_sa[4] = {0, 0, 0, 0};
    for (int s = 32; s <= 33; s++)
        syscall(SYS_rt_sigaction, s, kernel_sa, NULL, (size_t)8);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Run argv (stdin/stdout /dev/null, stderr captured); its exit code (128+N: signal N),
 * -1 when it could not run. The last line of its stderr goes to msg. */
static int run_argv(char **argv, char *msg, size_t msgsz) {
    msg[0] = 0;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(msg, msgsz, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, msgsz, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        dup2(p[1], 2);
        default_signals();
        execvp(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    char out[4096];
    size_t len = 0;
    int status = 0;
    bool done = false, eof = false;
    /* Its stderr until EOF, or until it exited and what it wrote is read (a process it left
     * behind may hold the pipe open: not waited for). */
    while (!eof) {
        if (!done) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid || (w < 0 && errno != EINTR))
                done = true;
        }
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (!done && poll(&pf, 1, 50) <= 0)
            continue;
        while (1) {
            char tmp[1024];
            ssize_t n = read(p[0], tmp, sizeof tmp);
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (n < 0 && errno != EAGAIN))
                eof = true;
            if (n <= 0)
                break;
            for (ssize_t k = 0; k < n; k++) { /* keep the last 4 KiB */
                if (len == sizeof out) {
                    memmove(out, out + 1024, sizeof out - 1024);
                    len -= 1024;
                }
                out[len++] = tmp[k];
            }
        }
        if (done)
            break;
    }
    close(p[0]);
    while (!done && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    /* the last non-empty line */
    while (len && isspace((unsigned char)out[len - 1]))
        len--;
    size_t start = len;
    while (start && out[start - 1] != '\n')
        start--;
    size_t l = len - start < msgsz - 1 ? len - start : msgsz - 1;
    memcpy(msg, out + start, l);
    msg[l] = 0;
    if (code && !msg[0]) {
        const char *base = strrchr(argv[0], '/');
        snprintf(msg, msgsz, "%s: exit %d", base ? base + 1 : argv[0], code);
    }
    return code;
}

/* monitor.classify_runtime_message */
static const char *classify(const char *message) {
    char low[1024];
    size_t k;
    for (k = 0; message[k] && k < sizeof low - 1; k++)
        low[k] = (char)tolower((unsigned char)message[k]);
    low[k] = 0;
    if (strstr(low, "executable file not found") || strstr(low, "no such file or directory"))
        return "not_found";
    if (strstr(low, "permission denied") || strstr(low, "exec format error") ||
        strstr(low, "is a directory"))
        return "not_executable";
    return "runtime";
}

/* ------------------------------------------------------------------ ctl requests */

static jobject req;

static void op_ping(conn_t *c) {
    buf_t b = {0};
    buf_addf(&b, "{\"ok\": true, \"monitor_pid\": %d, \"init_pid\": %d, \"started\": %s, "
                 "\"exited\": %s}",
             (int)getpid(), (int)cfg.init_pid, started ? "true" : "false",
             exited ? "true" : "false");
    reply_text(c, &b);
    buf_free(&b);
}

static void op_start(conn_t *c) {
    if (exited)
        return reply_error(c, "the container has exited", "not_running");
    if (started)
        return reply_error(c, "the container is already started", "bad_request");
    char msg[1200];
    if (cfg.start_fifo) {
        int fd = open(cfg.start_fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENXIO || errno == ENOENT)
                return reply_error(c, "cannot start a container that has stopped",
                                   "not_running");
            snprintf(msg, sizeof msg, "start: %s: %s", cfg.start_fifo, strerror(errno));
            return reply_error(c, msg, "runtime");
        }
        unlink(cfg.start_fifo);
        ssize_t w = write(fd, "0", 1);
        (void)w;
        close(fd);
    } else if (cfg.start_argc) {
        char out[1024];
        int code = run_argv(cfg.start_argv, out, sizeof out);
        if (code != 0)
            return reply_error(c, out, code < 0 ? "runtime" : classify(out));
    } else {
        return reply_error(c, "start: the monitor was given no way to start", "runtime");
    }
    started = true;
    reply_ok(c);
}

static void op_kill(conn_t *c) {
    if (exited)
        return reply_error(c, "the container is not running", "not_running");
    const jmember *sm = j_get(&req, "signal");
    long sig = SIGTERM;
    if (sm && !j_int_in(sm, 1, 64, &sig)) {
        buf_t b = {0};
        buf_adds(&b, "invalid signal ");
        j_repr(&b, sm);
        reply_error(c, buf_cstr(&b), "bad_request");
        buf_free(&b);
        return;
    }
    char msg[1200];
    if (!j_truthy(j_get(&req, "all"), false)) {
        if (kill(cfg.init_pid, (int)sig) < 0) {
            if (errno == ESRCH)
                return reply_error(c, "the container is not running", "not_running");
            snprintf(msg, sizeof msg, "%s: [Errno %d] %s", errno_class(errno), errno,
                     strerror(errno));
            return reply_error(c, msg, "runtime");
        }
        return reply_ok(c);
    }
    if (cfg.kill_argc) {
        char num[16], out[1024];
        snprintf(num, sizeof num, "%ld", sig);
        char **argv = calloc(cfg.kill_argc + 2, sizeof *argv);
        if (!argv)
            oom_abort();
        memcpy(argv, cfg.kill_argv, cfg.kill_argc * sizeof *argv);
        argv[cfg.kill_argc] = num;
        int code = run_argv(argv, out, sizeof out);
        free(argv);
        if (code != 0) {
            if (strstr(out, "not running") || strstr(out, "process already finished"))
                return reply_error(c, out, "not_running");
            return reply_error(c, out, code < 0 ? "runtime" : classify(out));
        }
        return reply_ok(c);
    }
    /* The init first (as the runtime's kill), then every process of the cgroup. */
    bool any = kill(cfg.init_pid, (int)sig) == 0;
    if (cfg.cgroup_procs) {
        FILE *f = fopen(cfg.cgroup_procs, "re");
        if (f) {
            long pid;
            while (fscanf(f, "%ld", &pid) == 1)
                if (pid > 0 && kill((pid_t)pid, (int)sig) == 0)
                    any = true;
            fclose(f);
        }
    }
    if (!any)
        return reply_error(c, "the container is not running", "not_running");
    reply_ok(c);
}

static void op_resize(conn_t *c) {
    const jmember *hm = j_get(&req, "height"), *wm = j_get(&req, "width");
    long h, w;
    if (!j_int_in(hm, 0, 65535, &h) || !j_int_in(wm, 0, 65535, &w)) {
        buf_t b = {0};
        buf_adds(&b, "invalid terminal size ");
        j_repr(&b, hm);
        buf_addc(&b, 'x');
        j_repr(&b, wm);
        reply_error(c, buf_cstr(&b), "bad_request");
        buf_free(&b);
        return;
    }
    if (cfg.fd_master < 0)
        return reply_error(c, "the container has no terminal", "bad_request");
    struct winsize ws = {.ws_row = (unsigned short)h, .ws_col = (unsigned short)w};
    if (ioctl(cfg.fd_master, TIOCSWINSZ, &ws) < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: [Errno %d] %s", errno_class(errno), errno,
                 strerror(errno));
        return reply_error(c, msg, "runtime");
    }
    reply_ok(c);
}

/* The C loop has no execs of its own (the zygote's exec sessions listen on their own sockets):
 * as the Python monitor answers for an exec it does not know. */
static void op_exec_resize(conn_t *c) {
    const jmember *hm = j_get(&req, "height"), *wm = j_get(&req, "width");
    long h, w;
    buf_t b = {0};
    if (!j_int_in(hm, 0, 65535, &h) || !j_int_in(wm, 0, 65535, &w)) {
        buf_adds(&b, "invalid terminal size ");
        j_repr(&b, hm);
        buf_addc(&b, 'x');
        j_repr(&b, wm);
        reply_error(c, buf_cstr(&b), "bad_request");
    } else {
        buf_adds(&b, "no running exec ");
        j_repr(&b, j_get(&req, "exec_id"));
        reply_error(c, buf_cstr(&b), "not_running");
    }
    buf_free(&b);
}

static bool exec_id_ok(const char *s, size_t n) {
    if (n < 1 || n > 128 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t k = 1; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        if (!isalnum(ch) && ch != '_' && ch != '.' && ch != '-')
            return false;
    }
    return true;
}

/* A blocking unix-socket connection to the zygote (connect/send bounded by 5 s). */
static int zygote_connect(void) {
    if (!cfg.zygote_socket) {
        errno = ENOENT;
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(cfg.zygote_socket) >= sizeof sa.sun_path) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, cfg.zygote_socket);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Hand the client's connection to the zygote, which forks an exec session serving it. */
static void op_exec(conn_t *c, const char *line, size_t n, const char *rest, size_t restn) {
    const jmember *idm = j_get(&req, "exec_id");
    buf_t tmp = {0};
    if (!idm || idm->type != J_STR || !exec_id_ok(j_str(&tmp, idm), strlen(j_str(&tmp, idm)))) {
        buf_clear(&tmp);
        buf_adds(&tmp, "invalid exec_id ");
        j_repr(&tmp, idm);
        reply_error(c, buf_cstr(&tmp), "bad_request");
        buf_free(&tmp);
        conn_close_after_flush(c);
        return;
    }
    const jmember *pm = j_get(&req, "process");
    if (!pm || pm->type != J_OBJ) {
        buf_free(&tmp);
        reply_error(c, "exec: process must be an OCI process object", "bad_request");
        conn_close_after_flush(c);
        return;
    }
    if (exited || !started) {
        buf_clear(&tmp);
        buf_addf(&tmp, "container %s is not running", cfg.id);
        reply_error(c, buf_cstr(&tmp), "not_running");
        buf_free(&tmp);
        conn_close_after_flush(c);
        return;
    }
    buf_t msg = {0};
    buf_adds(&msg, "{\"op\": \"exec\", \"state_dir\": ");
    json_str_ascii(&msg, cfg.state_dir, strlen(cfg.state_dir));
    buf_adds(&msg, ", \"request\": ");
    json_str_ascii(&msg, line, n);
    buf_adds(&msg, ", \"rest\": \"");
    for (size_t k = 0; k < restn; k++)
        buf_addf(&msg, "%02x", (unsigned char)rest[k]);
    buf_adds(&msg, "\"}\n");
    int zfd = zygote_connect();
    bool sent = false;
    int err = errno;
    if (zfd >= 0) {
        struct iovec iov = {buf_data(&msg), msg.len};
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof u);
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = u.b,
                            .msg_controllen = sizeof u.b};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));
        ssize_t w = sendmsg(zfd, &mh, MSG_NOSIGNAL);
        err = errno;
        sent = w == (ssize_t)msg.len;
        if (w >= 0 && !sent) { /* the rest, without the fd again */
            size_t off = (size_t)w;
            while (off < msg.len) {
                ssize_t k = send(zfd, buf_data(&msg) + off, msg.len - off, MSG_NOSIGNAL);
                if (k <= 0)
                    break;
                off += (size_t)k;
            }
            sent = off == msg.len;
        }
        close(zfd);
    }
    buf_free(&msg);
    buf_free(&tmp);
    if (!sent) {
        char text[600];
        snprintf(text, sizeof text, "exec: the monitor zygote is not running (%s)",
                 cfg.zygote_socket ? cfg.zygote_socket : "");
        complain("bh-monitor: exec: %s: %s", cfg.zygote_socket ? cfg.zygote_socket : "",
                 strerror(err));
        reply_error(c, text, "runtime");
        conn_close_after_flush(c);
        return;
    }
    /* The zygote's exec session serves the client from now on: just drop our copy. */
    c->closed = true;
    close(c->fd);
    c->fd = -1;
    buf_free(&c->out);
    buf_free(&c->in);
}

static void ctl_request(conn_t *c, const char *line, size_t n, const char *rest, size_t restn) {
    char err[200];
    int r = j_parse_object(line, n, &req, err, sizeof err);
    if (r == -1) {
        char msg[260];
        snprintf(msg, sizeof msg, "bad request: %s", err);
        reply_error(c, msg, "bad_request");
        conn_close_after_flush(c);
        return;
    }
    if (r == -2) {
        reply_error(c, "a request is a JSON object", "bad_request");
        conn_close_after_flush(c);
        return;
    }
    const jmember *op = j_get(&req, "op");
    buf_t name = {0};
    const char *o = op && op->type == J_STR ? j_str(&name, op) : "";
    if (op && op->type == J_STR && strlen(o) == name.len) {
        if (strcmp(o, "exec") == 0) {
            buf_free(&name);
            op_exec(c, line, n, rest, restn);
            return;
        }
        if (strcmp(o, "ping") == 0)
            op_ping(c);
        else if (strcmp(o, "start") == 0)
            op_start(c);
        else if (strcmp(o, "kill") == 0)
            op_kill(c);
        else if (strcmp(o, "resize") == 0)
            op_resize(c);
        else if (strcmp(o, "exec_resize") == 0)
            op_exec_resize(c);
        else
            o = NULL;
    } else {
        o = NULL;
    }
    if (!o) {
        buf_t b = {0};
        buf_adds(&b, "unknown op ");
        j_repr(&b, op); /* repr(op): 'x', None, 5, True ... as Python prints them */
        reply_error(c, buf_cstr(&b), "bad_request");
        buf_free(&b);
    }
    buf_free(&name);
    conn_close_after_flush(c);
}

static void ctl_data(conn_t *c, const char *data, size_t n) {
    if (c->closing)
        return;
    size_t had = c->in.len;
    buf_add(&c->in, data, n);
    const char *s = buf_data(&c->in);
    const char *nl = memchr(s + had, '\n', n);
    if (!nl) {
        if (c->in.len > CTL_MAX_LINE)
            conn_close(c);
        return;
    }
    size_t ln = (size_t)(nl - s);
    /* the request works on a copy: the connection may be handed over and freed */
    buf_t copy = {0};
    buf_add(&copy, s, c->in.len);
    buf_clear(&c->in);
    ctl_request(c, buf_data(&copy), ln, buf_data(&copy) + ln + 1, copy.len - ln - 1);
    buf_free(&copy);
}

/* ------------------------------------------------------------------ attach */

static void attach_data(conn_t *c, const char *data, size_t n) {
    if (c->closing)
        return;
    if (!c->registered) {
        size_t had = c->in.len;
        buf_add(&c->in, data, n);
        const char *s = buf_data(&c->in);
        const char *nl = memchr(s + had, '\n', n);
        if (!nl) {
            if (c->in.len > ATTACH_MAX_HEADER)
                conn_close(c);
            return;
        }
        size_t ln = (size_t)(nl - s);
        char err[200];
        int r = j_parse_object(s, ln, &req, err, sizeof err);
        if (r != 0) {
            char msg[260];
            snprintf(msg, sizeof msg, "attach: %s", r == -2 ? "not an object" : err);
            reply_error(c, msg, "bad_request");
            conn_close_after_flush(c);
            return;
        }
        c->want_stdin = j_truthy(j_get(&req, "stdin"), false);
        c->want_stdout = j_truthy(j_get(&req, "stdout"), true);
        c->want_stderr = j_truthy(j_get(&req, "stderr"), true);
        c->registered = true;
        buf_t copy = {0};
        buf_add(&copy, s + ln + 1, c->in.len - ln - 1);
        buf_free(&c->in);
        /* Where the log is now (inode, size): what reached the log before this client was
         * registered; an attach with logs=1&stream=1 replays up to there, no further. */
        char reply[160];
        struct stat lst;
        if (cfg.log_path && lg.fd >= 0 && fstat(lg.fd, &lst) == 0)
            snprintf(reply, sizeof reply, "{\"ok\": true, \"tty\": %s, \"log\": [%llu, %lld]}\n",
                     cfg.tty ? "true" : "false", (unsigned long long)lst.st_ino,
                     (long long)lst.st_size);
        else
            snprintf(reply, sizeof reply, "{\"ok\": true, \"tty\": %s}\n",
                     cfg.tty ? "true" : "false");
        conn_send(c, reply, strlen(reply));
        if (exited)
            conn_close_after_flush(c); /* nothing more will come: close once this went out */
        if (copy.len && c->want_stdin)
            sink_write(buf_data(&copy), copy.len);
        buf_free(&copy);
        return;
    }
    if (c->want_stdin)
        sink_write(data, n);
}

static void conn_readable(conn_t *c) {
    char *tmp = chunk; /* consumed before the next read of anything */
    ssize_t n = recv(c->fd, tmp, sizeof chunk, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        c->reading = false;
        if (c->linger_until) {
            conn_close(c);
        } else if (!c->closing) {
            if (c->kind == K_ATTACH) {
                if (c->registered && c->want_stdin && cfg.stdin_once)
                    sink_close_after_flush();
            } else {
                /* A ctl client that half-closed: without a whole request, there is no reply. */
                conn_close_after_flush(c);
            }
        }
        return;
    }
    if (c->closing)
        return;
    if (c->kind == K_CTL)
        ctl_data(c, tmp, (size_t)n);
    else
        attach_data(c, tmp, (size_t)n);
}

static void accept_on(int lfd, int kind) {
    for (int k = 0; k < 64; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                complain("bh-monitor: accept: %s", strerror(errno));
                accept_pause_until = mono_ns() + 100000000LL;
            }
            return;
        }
        conn_new(fd, kind);
    }
}

/* ------------------------------------------------------------------ signals */

static void on_signals(void) {
    struct signalfd_siginfo si[16];
    while (1) {
        ssize_t n = read(sigfd, si, sizeof si);
        if (n <= 0)
            break;
        for (size_t k = 0; k < (size_t)n / sizeof si[0]; k++) {
            int s = (int)si[k].ssi_signo;
            if (s == SIGTERM || s == SIGINT || s == SIGQUIT) {
                /* As conmon: a signal meant to end the monitor goes to the container instead;
                 * the monitor stays to record how it ended. */
                if (cfg.init_pid > 0 && !exited)
                    kill(cfg.init_pid, s);
            }
        }
    }
    reap();
}

static void noop_handler(int sig) { (void)sig; }

/* ------------------------------------------------------------------ finish */

static long long oom_kill_count(void) {
    if (!cfg.oom_cgroup)
        return 0;
    static const char *names[] = {"memory.oom_control", "memory.events"};
    for (int k = 0; k < 2; k++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", cfg.oom_cgroup, names[k]);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "oom_kill ", 9) == 0) {
                char *end;
                long long v = strtoll(line + 9, &end, 10);
                fclose(f);
                return v;
            }
        }
        fclose(f);
    }
    return 0;
}

/* 0, or the errno of the first failure (complained about) */
static int write_atomic(const char *path, const char *data, size_t n) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        complain("bh-monitor: %s: %s", tmp, strerror(e));
        return e;
    }
    int e = 0;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
            complain("bh-monitor: %s: %s", tmp, strerror(e));
            break;
        }
        off += (size_t)w;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        if (!e)
            e = errno;
        complain("bh-monitor: rename %s: %s", path, strerror(errno));
    }
    return e;
}

static void write_exit(void) {
    bool oom = oom_kill_count() > cfg.oom_base;
    char stamp[48];
    rfc3339_nano(stamp, sizeof stamp, real_ns());
    size_t el = strlen(error_text);
    char *doc = malloc(200 + 6 * el);
    if (!doc)
        oom_abort();
    int k = snprintf(doc, 200, "{\"exit_code\":%d,\"oom_killed\":%s,\"finished_at\":\"%s\",\"error\":\"",
                     exit_code >= 0 ? exit_code : 255, oom ? "true" : "false", stamp);
    size_t n = (size_t)k;
    n += json_str_msgspec(doc + n, (const unsigned char *)error_text, el);
    memcpy(doc + n, "\"}", 2);
    n += 2;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/exit.json", cfg.state_dir);
    write_atomic(path, doc, n);
    free(doc);
}

static void delete_begin(void) {
    del.done = true;
    int fd = zygote_connect();
    if (fd < 0) {
        complain("monitor: delete: the monitor zygote is not running (%s): %s",
                 cfg.zygote_socket ? cfg.zygote_socket : "", strerror(errno));
        del.fallback = true;
        return;
    }
    buf_t msg = {0};
    buf_adds(&msg, "{\"op\": \"delete\", \"state_dir\": ");
    json_str_ascii(&msg, cfg.state_dir, strlen(cfg.state_dir));
    buf_adds(&msg, "}\n");
    size_t off = 0;
    while (off < msg.len) {
        ssize_t w = send(fd, buf_data(&msg) + off, msg.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    size_t total = msg.len;
    buf_free(&msg);
    if (off < total && off == 0) {
        complain("monitor: delete: the monitor zygote is not running (%s): %s",
                 cfg.zygote_socket, strerror(errno));
        close(fd);
        del.fallback = true;
        return;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    del.fd = fd;
    del.deadline = mono_ns() + DELETE_NS;
    del.done = false;
}

static void delete_end(const char *why) {
    if (why)
        complain("monitor: delete: %s", why);
    if (del.fd >= 0)
        close(del.fd);
    del.fd = -1;
    del.done = true;
    buf_free(&del.in);
    reap();
}

static void delete_readable(void) {
    char tmp[4096];
    ssize_t n = read(del.fd, tmp, sizeof tmp);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (!del.in.len)
            del.fallback = true;
        delete_end(del.in.len ? NULL : "the monitor zygote closed the connection without a reply");
        return;
    }
    buf_add(&del.in, tmp, (size_t)n);
    const char *s = buf_data(&del.in);
    const char *nl = memchr(s, '\n', del.in.len);
    if (!nl) {
        if (del.in.len > 65536)
            delete_end("the monitor zygote's reply is too long");
        return;
    }
    size_t ln = (size_t)(nl - s);
    char err[200];
    int r = j_parse_object(s, ln, &req, err, sizeof err);
    if (r != 0 || j_get(&req, "error")) {
        char line[700];
        snprintf(line, sizeof line, "%.*s", (int)(ln < 600 ? ln : 600), s);
        delete_end(line);
        return;
    }
    delete_end(NULL);
}

/* Monitor.finish, up to the lingering part (which the loop does). */
static void finish_begin(void) {
    finishing = true;
    for (size_t k = 0; k < nsources; k++) {
        source_drain(&sources[k]);
        source_close(&sources[k]);
    }
    log_close();
    write_exit();
    sink_close();
    char path[PATH_MAX];
    if (cfg.fd_ctl >= 0)
        close(cfg.fd_ctl);
    if (cfg.fd_attach >= 0)
        close(cfg.fd_attach);
    cfg.fd_ctl = cfg.fd_attach = -1;
    snprintf(path, sizeof path, "%s/ctl.sock", cfg.state_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/attach.sock", cfg.state_dir);
    unlink(path);
    /* Clients get their EOF now (the exit is recorded), while the runtime deletes. */
    for (conn_t *c = conns; c; c = c->next)
        conn_close_after_flush(c);
    delete_begin();
    reap();
}

/* ------------------------------------------------------------------ the loop */

static size_t pending_out(void) {
    size_t n = 0;
    for (conn_t *c = conns; c; c = c->next)
        if (!c->closed)
            n += c->out.len;
    return n;
}

static void sweep(void) {
    conn_t **pp = &conns;
    while (*pp) {
        conn_t *c = *pp;
        if (c->closed) {
            *pp = c->next;
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

enum { P_SIG, P_CTL, P_ATTACH, P_SRC, P_SINK, P_CONN, P_DEL };

static void run(void) {
    struct pollfd *pfd = NULL;
    int *ptype = NULL;
    void **pobj = NULL;
    size_t pcap = 0;
    int64_t linger_deadline = 0;
    size_t last_pending = 0;
    reap();
    while (1) {
        int64_t now = mono_ns();
        if (!finishing && exited) {
            bool quiet = true;
            for (size_t k = 0; k < nsources; k++)
                if (sources[k].open && !sources[k].paused)
                    quiet = false;
            if (quiet || now >= exit_deadline) {
                finish_begin();
                now = mono_ns();
                linger_deadline = now + LINGER_NS;
                last_pending = pending_out();
            }
        }
        if (finishing) {
            if (!del.done && now >= del.deadline)
                delete_end("the monitor zygote did not answer in 30 s");
            sweep();
            if (del.done && (!conns || now >= linger_deadline))
                break;
        }
        size_t count = 0, want = 8;
        for (conn_t *c = conns; c; c = c->next)
            want++;
        if (want > pcap) {
            pcap = want * 2;
            pfd = realloc(pfd, pcap * sizeof *pfd);
            ptype = realloc(ptype, pcap * sizeof *ptype);
            pobj = realloc(pobj, pcap * sizeof *pobj);
            if (!pfd || !ptype || !pobj)
                oom_abort();
        }
#define ADD(fd_, ev_, type_, obj_)                                                             \
    do {                                                                                       \
        pfd[count] = (struct pollfd){.fd = (fd_), .events = (short)(ev_)};                     \
        ptype[count] = (type_);                                                                \
        pobj[count] = (obj_);                                                                  \
        count++;                                                                               \
    } while (0)
        ADD(sigfd, POLLIN, P_SIG, NULL);
        if (now >= accept_pause_until) {
            if (cfg.fd_ctl >= 0)
                ADD(cfg.fd_ctl, POLLIN, P_CTL, NULL);
            if (cfg.fd_attach >= 0)
                ADD(cfg.fd_attach, POLLIN, P_ATTACH, NULL);
        }
        for (size_t k = 0; k < nsources; k++)
            if (sources[k].open && !sources[k].paused)
                ADD(sources[k].fd, POLLIN, P_SRC, &sources[k]);
        if (sink.present && !sink.closed && sink.out.len)
            ADD(sink.fd, POLLOUT, P_SINK, NULL);
        if (del.fd >= 0)
            ADD(del.fd, POLLIN, P_DEL, NULL);
        for (conn_t *c = conns; c; c = c->next) {
            if (c->closed)
                continue;
            /* Even with no events: POLLHUP tells of a client gone for good (a unix socket whose
             * peer closed; a mere half-close does not raise it), which is then closed rather
             * than kept until output fails to reach it. */
            bool in = c->reading;
            if (in && c->kind == K_ATTACH && c->registered && c->want_stdin && sink.present &&
                !sink.closed && sink.out.len >= HIGH_WATER)
                in = false; /* the container does not read its stdin: neither do we, for now */
            short ev = (short)((in ? POLLIN : 0) | (c->out.len ? POLLOUT : 0));
            ADD(c->fd, ev, P_CONN, c);
        }
#undef ADD
        int64_t deadline = INT64_MAX;
        if (exited && !finishing && exit_deadline < deadline)
            deadline = exit_deadline;
        if (finishing) {
            if (linger_deadline < deadline)
                deadline = linger_deadline;
            if (!del.done && del.deadline < deadline)
                deadline = del.deadline;
        }
        if (accept_pause_until > now && accept_pause_until < deadline)
            deadline = accept_pause_until;
        for (conn_t *c = conns; c; c = c->next)
            if (!c->closed && c->linger_until && c->linger_until < deadline)
                deadline = c->linger_until;
        int timeout = -1;
        if (deadline != INT64_MAX) {
            int64_t ms = (deadline - now + 999999) / 1000000;
            timeout = ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
        }
        int r = poll(pfd, count, timeout);
        if (r < 0 && errno != EINTR) {
            complain("bh-monitor: poll: %s", strerror(errno));
            sleep(1);
        }
        for (size_t k = 0; r > 0 && k < count; k++) {
            short re = pfd[k].revents;
            if (!re)
                continue;
            switch (ptype[k]) {
            case P_SIG:
                on_signals();
                break;
            case P_CTL:
                if (cfg.fd_ctl >= 0)
                    accept_on(cfg.fd_ctl, K_CTL);
                break;
            case P_ATTACH:
                if (cfg.fd_attach >= 0)
                    accept_on(cfg.fd_attach, K_ATTACH);
                break;
            case P_SRC: {
                source_t *s = pobj[k];
                if (s->open && !s->paused)
                    source_read(s);
                break;
            }
            case P_SINK:
                if (sink.present && !sink.closed) {
                    if (re & (POLLERR | POLLNVAL))
                        sink_close();
                    else
                        sink_flush();
                }
                break;
            case P_DEL:
                if (del.fd >= 0)
                    delete_readable();
                break;
            case P_CONN: {
                conn_t *c = pobj[k];
                if (!c->closed && (re & POLLOUT) && c->out.len)
                    conn_writable(c);
                /* (POLLHUP without POLLIN polled: the client is gone, what it left is finite) */
                if (!c->closed && c->reading && (re & (POLLIN | POLLHUP | POLLERR)))
                    conn_readable(c);
                else if (!c->closed && (re & (POLLERR | POLLNVAL)))
                    conn_close(c);
                else if (!c->closed && !c->reading && !c->out.len && (re & POLLHUP))
                    conn_close(c);
                break;
            }
            }
        }
        now = mono_ns();
        for (conn_t *c = conns; c; c = c->next)
            if (!c->closed && c->linger_until && now >= c->linger_until)
                conn_close(c);
        if (finishing) {
            size_t p = pending_out();
            if (p < last_pending)
                linger_deadline = now + LINGER_NS;
            last_pending = p;
        }
        sweep();
    }
    for (conn_t *c = conns; c; c = c->next)
        conn_close(c);
    sweep();
    if (cfg.fd_master >= 0)
        close(cfg.fd_master);
    reap();
    free(pfd);
    free(ptype);
    free(pobj);
    if (del.fallback && cfg.delete_argc) {
        /* The last resort: become the runtime's delete ourselves (same pid, nothing left). */
        complain("monitor: delete: running %s instead", cfg.delete_argv[0]);
        close(sigfd);
        default_signals();
        execvp(cfg.delete_argv[0], cfg.delete_argv);
        complain("monitor: delete: exec %s: %s", cfg.delete_argv[0], strerror(errno));
    }
}

/* ------------------------------------------------------------------ early hand-over */

/* monitor._memory_cgroup: the v1 memory hierarchy's directory of pid, else the v2 one. */
static char *memory_cgroup(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *line = NULL, *v2 = NULL, *found = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!found && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *where = c2 + 1;
        for (char *tok = c1 + 1, *end; tok; tok = end ? end + 1 : NULL) {
            end = strchr(tok, ',');
            size_t len = end ? (size_t)(end - tok) : strlen(tok);
            if (len == 6 && !memcmp(tok, "memory", 6)) {
                if (asprintf(&found, "/sys/fs/cgroup/memory%s", where) < 0)
                    oom_abort();
                break;
            }
        }
        if (!found && !c1[1]) {
            free(v2);
            v2 = strdup(where);
            if (!v2)
                oom_abort();
        }
    }
    fclose(f);
    free(line);
    if (!found && v2 && access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 &&
        asprintf(&found, "/sys/fs/cgroup%s", v2) < 0)
        oom_abort();
    free(v2);
    return found;
}

static void send_reply(const char *line, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(cfg.fd_reply, line + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(cfg.fd_reply);
    cfg.fd_reply = -1;
}

/* Set-up failed: as Monitor._close_listeners, then the error to the spawner, and exit 1. */
static void create_failed(const char *reply, size_t n) {
    char path[PATH_MAX];
    close(cfg.fd_ctl);
    close(cfg.fd_attach);
    snprintf(path, sizeof path, "%s/ctl.sock", cfg.state_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/attach.sock", cfg.state_dir);
    unlink(path);
    send_reply(reply, n);
}

/*
 * The Python monitor handed over while its helper still ran the runtime's create (the
 * in-process runtime): what Monitor.setup, serve() and note_oom_base do with the helper's
 * answer ({"pid", "fifo"} and the pty master, or {"error", "kind"}), done here. The answer
 * is read as the Python monitor reads it: what one message brings, not up to EOF (the helper
 * takes a while to exit).
 */
static void finish_create(void) {
    buf_t in = {0};
    int got[4], ngot = 0;
    int r = -1;
    while (1) {
        char data[65536];
        union {
            struct cmsghdr h;
            char space[CMSG_SPACE(4 * sizeof(int))];
        } ctrl;
        struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.space,
                            .msg_controllen = sizeof ctrl.space};
        ssize_t n = recvmsg(cfg.fd_helper, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *fds = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < k; i++) {
                if (ngot < 4)
                    got[ngot++] = fds[i];
                else
                    close(fds[i]);
            }
        }
        if (n <= 0)
            break;
        buf_add(&in, data, (size_t)n);
        char err[200];
        r = j_parse_object(buf_data(&in), in.len, &req, err, sizeof err);
        if (r == 0)
            break;
    }
    close(cfg.fd_helper);
    cfg.fd_helper = -1;
    if (r != 0) {
        static const char msg[] =
            "{\"error\": \"the runtime helper process failed (see monitor.log)\", "
            "\"kind\": \"runtime\"}\n";
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        create_failed(msg, sizeof msg - 1);
        exit(1);
    }
    if (j_get(&req, "error")) { /* the helper's {"error", "kind"}, as serve() sends it on */
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        buf_addc(&in, '\n');
        create_failed(buf_data(&in), in.len);
        exit(1);
    }
    long pid = 0;
    if (!j_int_in(j_get(&req, "pid"), 1, INT_MAX, &pid)) {
        static const char msg[] = "{\"error\": \"KeyError: 'pid'\", \"kind\": \"runtime\"}\n";
        create_failed(msg, sizeof msg - 1);
        exit(1);
    }
    cfg.init_pid = (pid_t)pid;
    const jmember *fm = j_get(&req, "fifo");
    if (fm && fm->type == J_STR) {
        buf_t tmp = {0};
        const char *fifo = j_str(&tmp, fm);
        if (*fifo) {
            cfg.start_fifo = strdup(fifo);
            if (!cfg.start_fifo)
                oom_abort();
        }
        buf_free(&tmp);
    }
    if (cfg.tty) {
        if (ngot < 1) {
            static const char msg[] =
                "{\"error\": \"AssertionError: \", \"kind\": \"runtime\"}\n";
            create_failed(msg, sizeof msg - 1);
            exit(1);
        }
        cfg.fd_master = got[0];
        cfg.fd_out = dup(got[0]);
        if (cfg.stdin_open)
            cfg.fd_stdin = dup(got[0]);
    } else {
        for (int i = 0; i < ngot; i++)
            close(got[i]);
    }
    buf_free(&in);
    char doc[200];
    int n = snprintf(doc, sizeof doc, "{\"monitor_pid\":%d,\"monitor_start\":%lld,\"init_pid\":%d}",
                     (int)getpid(), cfg.monitor_start, (int)cfg.init_pid);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/monitor.json", cfg.state_dir);
    int e = write_atomic(path, doc, (size_t)n);
    if (e) {
        /* Created but not served: take the container down again (the runtime's delete, as
         * --delete-arg does it at the end), after the error. */
        buf_t b = {0};
        char tmp[PATH_MAX + 32];
        snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
        buf_addf(&b, "%s: [Errno %d] %s: ", errno_class(e), e, strerror(e));
        py_repr_str(&b, tmp, strlen(tmp));
        buf_t line = {0};
        buf_adds(&line, "{\"error\": ");
        json_str_ascii(&line, buf_data(&b), b.len);
        buf_adds(&line, ", \"kind\": \"runtime\"}\n");
        create_failed(buf_data(&line), line.len);
        kill(cfg.init_pid, SIGKILL);
        if (cfg.delete_argc) {
            close(sigfd);
            default_signals();
            execvp(cfg.delete_argv[0], cfg.delete_argv);
        }
        exit(1);
    }
    n = snprintf(doc, sizeof doc, "{\"monitor_pid\": %d, \"init_pid\": %d}\n", (int)getpid(),
                 (int)cfg.init_pid);
    send_reply(doc, (size_t)n);
    /* note_oom_base, before the container may start */
    char *mem = memory_cgroup(cfg.init_pid);
    if (mem) {
        cfg.oom_cgroup = mem;
        cfg.oom_base = oom_kill_count();
        char *procs;
        if (asprintf(&procs, "%s/cgroup.procs", mem) < 0)
            oom_abort();
        cfg.cgroup_procs = procs;
        cfg.kill_argc = 0; /* _hand_over: --cgroup-procs when there is a memory cgroup */
    }
}

/* ------------------------------------------------------------------ start-up */

static void usage(const char *why) {
    complain("bh-monitor: %s", why);
    complain("usage: bh-monitor --id ID --state-dir DIR --init-pid PID --fd-ctl N --fd-attach N "
             "--fd-out N [--fd-err N] [--fd-stdin N] [--fd-master N] --tty 0|1 --stdin-once 0|1 "
             "[--log-path PATH --log-max-size BYTES --log-max-files N] [--oom-cgroup DIR "
             "--oom-base N] [--start-fifo PATH] [--start-arg ARG]... [--kill-all-arg ARG]... "
             "[--cgroup-procs PATH] --zygote-socket PATH [--delete-arg ARG]... "
             "[--fd-helper N --fd-reply N --monitor-start N [--stdin-open 0|1]]");
    exit(2);
}

static long long num_arg(const char *name, const char *v) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || !*v || *end) {
        char why[300];
        snprintf(why, sizeof why, "%s: not a number: %s", name, v);
        usage(why);
    }
    return x;
}

static int fd_arg(const char *name, const char *v) {
    long long x = num_arg(name, v);
    if (x < 0 || x > INT_MAX || fcntl((int)x, F_GETFD) < 0) {
        char why[300];
        snprintf(why, sizeof why, "%s: not an open fd: %s", name, v);
        usage(why);
    }
    return (int)x;
}

static void parse_args(int argc, char **argv) {
    cfg.start_argv = calloc((size_t)argc + 1, sizeof(char *));
    cfg.kill_argv = calloc((size_t)argc + 1, sizeof(char *));
    cfg.delete_argv = calloc((size_t)argc + 1, sizeof(char *));
    if (!cfg.start_argv || !cfg.kill_argv || !cfg.delete_argv)
        oom_abort();
    bool have_tty = false, have_once = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            char why[300];
            snprintf(why, sizeof why, "%s: a value is missing", a);
            usage(why);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--id"))
            cfg.id = v;
        else if (!strcmp(a, "--state-dir"))
            cfg.state_dir = v;
        else if (!strcmp(a, "--init-pid"))
            cfg.init_pid = (pid_t)num_arg(a, v);
        else if (!strcmp(a, "--fd-ctl"))
            cfg.fd_ctl = fd_arg(a, v);
        else if (!strcmp(a, "--fd-attach"))
            cfg.fd_attach = fd_arg(a, v);
        else if (!strcmp(a, "--fd-out"))
            cfg.fd_out = fd_arg(a, v);
        else if (!strcmp(a, "--fd-err"))
            cfg.fd_err = fd_arg(a, v);
        else if (!strcmp(a, "--fd-stdin"))
            cfg.fd_stdin = fd_arg(a, v);
        else if (!strcmp(a, "--fd-master"))
            cfg.fd_master = fd_arg(a, v);
        else if (!strcmp(a, "--tty")) {
            cfg.tty = num_arg(a, v) != 0;
            have_tty = true;
        } else if (!strcmp(a, "--stdin-once")) {
            cfg.stdin_once = num_arg(a, v) != 0;
            have_once = true;
        } else if (!strcmp(a, "--log-path"))
            cfg.log_path = v;
        else if (!strcmp(a, "--log-max-size"))
            cfg.log_max_size = num_arg(a, v);
        else if (!strcmp(a, "--log-max-files"))
            cfg.log_max_files = (long)num_arg(a, v);
        else if (!strcmp(a, "--oom-cgroup"))
            cfg.oom_cgroup = v;
        else if (!strcmp(a, "--oom-base"))
            cfg.oom_base = num_arg(a, v);
        else if (!strcmp(a, "--start-fifo"))
            cfg.start_fifo = v;
        else if (!strcmp(a, "--start-arg"))
            cfg.start_argv[cfg.start_argc++] = (char *)v;
        else if (!strcmp(a, "--kill-all-arg"))
            cfg.kill_argv[cfg.kill_argc++] = (char *)v;
        else if (!strcmp(a, "--delete-arg"))
            cfg.delete_argv[cfg.delete_argc++] = (char *)v;
        else if (!strcmp(a, "--cgroup-procs"))
            cfg.cgroup_procs = v;
        else if (!strcmp(a, "--zygote-socket"))
            cfg.zygote_socket = v;
        else if (!strcmp(a, "--fd-helper"))
            cfg.fd_helper = fd_arg(a, v);
        else if (!strcmp(a, "--fd-reply"))
            cfg.fd_reply = fd_arg(a, v);
        else if (!strcmp(a, "--monitor-start"))
            cfg.monitor_start = num_arg(a, v);
        else if (!strcmp(a, "--stdin-open"))
            cfg.stdin_open = num_arg(a, v) != 0;
        else {
            char why[300];
            snprintf(why, sizeof why, "unknown option %s", a);
            usage(why);
        }
    }
    bool early = cfg.fd_helper >= 0;
    if (early && (cfg.fd_reply < 0 || cfg.init_pid || cfg.fd_master >= 0 || cfg.oom_cgroup ||
                  (cfg.tty && cfg.fd_out >= 0)))
        usage("--fd-helper goes with --fd-reply, and without --init-pid, --fd-master, "
              "--oom-cgroup and (with a tty) --fd-out: the helper's answer gives those");
    if (!cfg.id || !cfg.state_dir || (!early && cfg.init_pid <= 0) || cfg.fd_ctl < 0 ||
        cfg.fd_attach < 0 || (cfg.fd_out < 0 && !(early && cfg.tty)) || !have_tty ||
        !have_once || !cfg.zygote_socket)
        usage("--id, --state-dir, --init-pid, --fd-ctl, --fd-attach, --fd-out, --tty, "
              "--stdin-once and --zygote-socket are required");
    if (!cfg.tty && cfg.fd_err < 0)
        usage("--fd-err is required without a tty");
}

static void set_flags(int fd, bool nonblock) {
    if (fd < 0)
        return;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (nonblock) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    char name[32]; /* as the Python monitor named itself (the kernel keeps 15 bytes) */
    snprintf(name, sizeof name, "bh-mon %.12s", cfg.id);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    int named[] = {cfg.fd_ctl,    cfg.fd_attach, cfg.fd_out,    cfg.fd_err,
                   cfg.fd_stdin,  cfg.fd_master, cfg.fd_helper, cfg.fd_reply};
    int maxfd = 2;
    for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
        if (named[k] > maxfd)
            maxfd = named[k];
#ifdef SYS_close_range
    syscall(SYS_close_range, (unsigned)maxfd + 1, ~0U, 0);
#endif
    set_flags(cfg.fd_ctl, true);
    set_flags(cfg.fd_attach, true);
    set_flags(cfg.fd_out, true);
    set_flags(cfg.fd_err, true);
    set_flags(cfg.fd_stdin, true);
    set_flags(cfg.fd_master, false);
    set_flags(cfg.fd_helper, false);
    set_flags(cfg.fd_reply, false);

    /* Handlers, not SIG_IGN (an ignored signal would stay ignored across exec, in the
     * runtime's children); blocked and read from a signalfd. */
    sigemptyset(&handled);
    int sigs[] = {SIGCHLD, SIGHUP, SIGPIPE, SIGTERM, SIGINT, SIGQUIT};
    struct sigaction sa = {.sa_handler = noop_handler};
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
        sigaddset(&handled, sigs[k]);
        sigaction(sigs[k], &sa, NULL);
    }
    sigprocmask(SIG_BLOCK, &handled, NULL);
    sigfd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0) {
        complain("bh-monitor: signalfd: %s", strerror(errno));
        return 1;
    }
    if (cfg.fd_helper >= 0) { /* signals wait in the signalfd, children unreaped, meanwhile */
        finish_create();
        set_flags(cfg.fd_out, true);
        set_flags(cfg.fd_stdin, true);
        set_flags(cfg.fd_master, false);
    }

    sources[nsources++] = (source_t){.fd = cfg.fd_out, .stream = 1, .open = true};
    if (!cfg.tty && cfg.fd_err >= 0)
        sources[nsources++] = (source_t){.fd = cfg.fd_err, .stream = 2, .open = true};
    /* A fast writer fills 64 KiB in no time: with more room it runs longer between the
     * monitor's reads, and each read takes more (fewer wake-ups; best effort, a pty has none). */
    if (!cfg.tty)
        for (size_t k = 0; k < nsources; k++)
            fcntl(sources[k].fd, F_SETPIPE_SZ, PIPE_SIZE);
    if (cfg.fd_stdin >= 0) {
        sink.present = true;
        sink.fd = cfg.fd_stdin;
    }
    log_init();
    run();
    return 0;
}
