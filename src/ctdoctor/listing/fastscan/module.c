/*
 * module.c: the Python side of ctdoctor.listing._fastscan.
 *
 * Aggregator(fields, states, protos, port, src_nets, dst_nets)
 *   fields:   tuple of field ids (F_* in fastscan.h; ctdoctor.listing.query's KEYS) forming the key
 *   states:   tuple of bytes labels to keep, or None
 *   protos:   tuple of bytes protocol names to keep, or None
 *   port:     orig sport or dport to match, or -1
 *   src_nets, dst_nets: tuple of (family, packed address, prefix) or None
 * .feed(buf, skip_first_bad) -> (lines, bad lines, first bad line or 0)
 * .feed_netlink(buf) -> (entries, malformed messages, done)
 * .result() -> {(key bytes, label bytes): [count, opk, ob, rpk, rb]}
 * .top(limit), .merge(other, prefix), .sample_every(n); .matched, .total, .accounting, ...
 * feed_many((agg, ...), buf, skip_first_bad), netlink_feed((agg, ...), buf): one read, many tables.
 *
 * The busy guard: feeding and merging release the GIL while they change a table, so a second
 * thread could otherwise feed, merge, read or re-initialise the same Aggregator meanwhile and
 * corrupt it (or read a table being moved by mremap). Every call that works on a table claims it
 * under the GIL first (busy = 1, cleared under the GIL when done); a call that finds it claimed
 * raises RuntimeError instead. The flag is only read and written with the GIL held, so it needs
 * no atomics.
 */
#include "fastscan.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static PyTypeObject AggregatorType;

/* ---- the busy guard -------------------------------------------------------------------------- */

/* Claim every aggregator of aggs (one may appear twice: it is claimed once); -1 with RuntimeError
   set, none claimed, when one is already in use. */
static int claim(Aggregator **aggs, int n) {
    for (int i = 0; i < n; i++)
        if (aggs[i]->busy) {
            PyErr_SetString(PyExc_RuntimeError,
                            "Aggregator is in use by another thread: feed, merge and read one table from one "
                            "thread at a time");
            return -1;
        }
    for (int i = 0; i < n; i++) aggs[i]->busy = 1;
    return 0;
}

static void release(Aggregator **aggs, int n) {
    for (int i = 0; i < n; i++) aggs[i]->busy = 0;
}

/* The aggregators of a tuple, as an array (borrowed); NULL with an exception set if one is not.
   The tuple keeps them alive while the GIL is released. */
static Aggregator **agg_array(PyObject *tup, int *n) {
    if (!PyTuple_Check(tup) || PyTuple_GET_SIZE(tup) < 1 || PyTuple_GET_SIZE(tup) > 64) {
        PyErr_SetString(PyExc_ValueError, "a tuple of 1 to 64 Aggregators");
        return NULL;
    }
    *n = (int)PyTuple_GET_SIZE(tup);
    Aggregator **out = malloc(sizeof(Aggregator *) * (size_t)*n);
    if (!out) { PyErr_NoMemory(); return NULL; }
    for (int i = 0; i < *n; i++) {
        PyObject *o = PyTuple_GET_ITEM(tup, i);
        if (!PyObject_TypeCheck(o, &AggregatorType)) {
            free(out);
            PyErr_SetString(PyExc_TypeError, "not an Aggregator");
            return NULL;
        }
        out[i] = (Aggregator *)o;
    }
    return out;
}

/* ---- feeding text ---------------------------------------------------------------------------- */

/* (lines, bad lines, first bad line or 0); the aggregators' binary_line and noise are set.
   buf is released here, on every path. */
static PyObject *text_result(Aggregator **aggs, int na, Py_buffer *buf, int skip_first_bad) {
    text_read r;
    if (claim(aggs, na) < 0) { PyBuffer_Release(buf); return NULL; }
    char *keys = malloc((size_t)BATCH * KEYMAX);
    if (!keys) { release(aggs, na); PyBuffer_Release(buf); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    feed_text(aggs, na, buf->buf, (const char *)buf->buf + buf->len, skip_first_bad, keys, &r);
    Py_END_ALLOW_THREADS
    release(aggs, na);
    free(keys);
    PyBuffer_Release(buf);
    for (int i = 0; i < na; i++) {
        aggs[i]->binary_line = r.binary_line;
        aggs[i]->noise |= r.noise;
    }
    if (r.nomem) return PyErr_NoMemory();
    return Py_BuildValue("(LLL)", r.lines, r.bad, r.first_bad);
}

/* feed(buf, skip_first_bad=False) -> (lines, bad lines, first bad line or 0) */
static PyObject *agg_feed(Aggregator *a, PyObject *args) {
    Py_buffer buf;
    int skip_first_bad = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &buf, &skip_first_bad)) return NULL;
    return text_result(&a, 1, &buf, skip_first_bad);
}

/* feed_many((agg, ...), buf, skip_first_bad=False): each line read once, taken by every table. */
static PyObject *feed_many(PyObject *self, PyObject *args) {
    PyObject *tup;
    Py_buffer buf;
    int skip_first_bad = 0, n;
    if (!PyArg_ParseTuple(args, "Oy*|p", &tup, &buf, &skip_first_bad)) return NULL;
    Aggregator **aggs = agg_array(tup, &n);
    if (!aggs) { PyBuffer_Release(&buf); return NULL; }
    PyObject *r = text_result(aggs, n, &buf, skip_first_bad);
    free(aggs);
    return r;
}

/* scan_fields(line, how) -> the scan.S_* tuple or None; how 0: the general rules, 1: only the
   canonical shape (None when parse_canon declines), 2: both as feed reads it. For the tests. */
static PyObject *scan_fields(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int how;
    if (!PyArg_ParseTuple(args, "y*i", &buf, &how)) return NULL;
    const char *s = buf.buf, *te = s + buf.len;
    while (s < te && (*s == ' ' || *s == '\r')) s++;
    while (te > s && (te[-1] == ' ' || te[-1] == '\r')) te--;
    entry e;
    int r = how == 0 ? parse_line(s, te, &e) : how == 1 ? parse_canon(s, te, &e) : read_line(s, te, &e);
    if (s >= te || r < 0) { PyBuffer_Release(&buf); Py_RETURN_NONE; }
    char v6[4][48];
    span a[4];
    for (int k = 0; k < 4; k++) {
        if (e.fam[k] == AF_INET6) {
            a[k].n = (Py_ssize_t)ntop6(e.bin[k], v6[k]);
            a[k].p = v6[k];
        } else a[k] = e.addr[k];
    }
    span lab = label_of(&e);
    const char *l3 = e.l3.n ? e.l3.p : (e.fam[0] == AF_INET6 ? "ipv6" : "ipv4");
    Py_ssize_t l3n = e.l3.n ? e.l3.n : 4;
    /* the bools are borrowed singletons ("O" adds the reference): nothing to release on failure */
    PyObject *res = Py_BuildValue("(y#y#y#y#y#y#y#y#y#y#y#OOKKKKO)", l3, l3n, e.proto.p, e.proto.n, lab.p, lab.n,
                                  a[0].p, a[0].n, a[1].p, a[1].n, e.sport.p ? e.sport.p : "", e.sport.n,
                                  e.dport.p ? e.dport.p : "", e.dport.n, a[2].p, a[2].n, a[3].p, a[3].n,
                                  e.mark.p, e.mark.n, e.zone.p, e.zone.n, e.unreplied ? Py_True : Py_False,
                                  e.assured ? Py_True : Py_False, e.opk, e.ob, e.rpk, e.rb,
                                  e.acct ? Py_True : Py_False);
    PyBuffer_Release(&buf);
    return res;
}

/* ---- feeding ctnetlink messages ---------------------------------------------------------------- */

static PyObject *nl_result(Py_buffer *pb, Aggregator **aggs, int na) {
    nl_read r;
    if (claim(aggs, na) < 0) { PyBuffer_Release(pb); return NULL; }
    char *keys = malloc((size_t)BATCH * KEYMAX);
    if (!keys) { release(aggs, na); PyBuffer_Release(pb); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    feed_nl(aggs, na, pb->buf, pb->len, keys, &r);
    Py_END_ALLOW_THREADS
    release(aggs, na);
    free(keys);
    PyBuffer_Release(pb);
    if (r.nomem) return PyErr_NoMemory();
    if (r.err) { errno = r.err; return PyErr_SetFromErrno(PyExc_OSError); }
    return Py_BuildValue("(LLO)", r.entries, r.malformed, r.done ? Py_True : Py_False);
}

/* feed_netlink(buf) -> (entries, malformed messages, done): a dump's or event socket's buffer. */
static PyObject *agg_feed_netlink(Aggregator *a, PyObject *args) {
    Py_buffer pb;
    if (!PyArg_ParseTuple(args, "y*", &pb)) return NULL;
    return nl_result(&pb, &a, 1);
}

/* netlink_feed((agg, ...), buf) -> (entries, malformed messages, done) */
static PyObject *netlink_feed(PyObject *self, PyObject *args) {
    PyObject *tup;
    Py_buffer pb;
    int n;
    if (!PyArg_ParseTuple(args, "Oy*", &tup, &pb)) return NULL;
    Aggregator **aggs = agg_array(tup, &n);
    if (!aggs) { PyBuffer_Release(&pb); return NULL; }
    PyObject *r = nl_result(&pb, aggs, n);
    free(aggs);
    return r;
}

/* netlink_select(agg, buf, protect_established, seq, ack_every=1)
       -> (entries, matched, protected, malformed, done, requests): see select_nl (netlink.c). */
static PyObject *netlink_select(PyObject *self, PyObject *args) {
    PyObject *ao;
    Py_buffer pb;
    int protect;
    unsigned int seq, ack_every = 1;
    if (!PyArg_ParseTuple(args, "O!y*pI|I", &AggregatorType, &ao, &pb, &protect, &seq, &ack_every)) return NULL;
    Aggregator *a = (Aggregator *)ao;
    if (claim(&a, 1) < 0) { PyBuffer_Release(&pb); return NULL; }
    unsigned char *out;
    size_t used;
    nl_select r;
    Py_BEGIN_ALLOW_THREADS
    select_nl(a, pb.buf, pb.len, protect, seq, ack_every, &out, &used, &r);
    Py_END_ALLOW_THREADS
    release(&a, 1);
    PyBuffer_Release(&pb);
    if (r.nomem) return PyErr_NoMemory();  /* select_nl freed out */
    if (r.err) { free(out); errno = r.err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *req = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)used);
    free(out);
    if (!req) return NULL;
    /* "N" hands req over; Py_BuildValue releases it on failure as well */
    return Py_BuildValue("(LLLLON)", r.entries, r.matched, r.protected_, r.malformed, r.done ? Py_True : Py_False,
                         req);
}

/* ---- results --------------------------------------------------------------------------------- */

/* result() -> {(key, label): [count, opk, ob, rpk, rb]}, in the order the records came. */
static PyObject *agg_result(Aggregator *a, PyObject *noargs) {
    if (claim(&a, 1) < 0) return NULL;  /* a finaliser run by an allocation could feed it */
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < a->used; i++) {
        slot *s = &a->slots[i];
        const sums *u = sums_of(a, i);
        const char *key = slot_key(s);
        PyObject *k = Py_BuildValue("(y#y#)", key, (Py_ssize_t)s->klen, key + s->klen, (Py_ssize_t)s->llen);
        PyObject *v = k ? Py_BuildValue("[LKKKK]", s->count, u->opk, u->ob, u->rpk, u->rb) : NULL;
        if (!v || PyDict_SetItem(d, k, v) < 0) Py_CLEAR(d);
        Py_XDECREF(k); Py_XDECREF(v);
    }
    release(&a, 1);
    return d;
}

/* merge(other, prefix=b"") adds other's counts, keys prefixed. */
static PyObject *agg_merge(Aggregator *a, PyObject *args) {
    PyObject *o;
    const char *pre = "";
    Py_ssize_t plen = 0;
    if (!PyArg_ParseTuple(args, "O!|y#", &AggregatorType, &o, &pre, &plen)) return NULL;
    Aggregator *both[2] = { a, (Aggregator *)o };
    if (claim(both, 2) < 0) return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = merge_into(a, both[1], pre, (size_t)plen);
    Py_END_ALLOW_THREADS
    release(both, 2);
    if (r == -2) { PyErr_SetString(PyExc_ValueError, "key too long"); return NULL; }
    if (r < 0) return PyErr_NoMemory();
    a->matched += both[1]->matched;
    a->total += both[1]->total;
    a->accounting |= both[1]->accounting;
    Py_RETURN_NONE;
}

/* top(limit) -> (groups, rows): see top.c. */
static PyObject *agg_top(Aggregator *a, PyObject *args) {
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "n", &limit)) return NULL;
    if (claim(&a, 1) < 0) return NULL;
    PyObject *r = top_rows(a, limit);
    release(&a, 1);
    return r;
}

/* ---- the type -------------------------------------------------------------------------------- */

static int parse_nets(PyObject *obj, struct net *nets, int *n) {
    *n = 0;
    if (obj == Py_None) return 0;
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) > 64) {
        PyErr_SetString(PyExc_ValueError, "nets must be a tuple of at most 64 (family, packed, prefix)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); i++) {
        int fam, prefix;
        const char *addr;
        Py_ssize_t alen;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(obj, i), "iy#i", &fam, &addr, &alen, &prefix)) return -1;
        if (alen > 16 || prefix < 0 || prefix > alen * 8) { PyErr_SetString(PyExc_ValueError, "bad net"); return -1; }
        nets[i].family = fam == 6 ? AF_INET6 : AF_INET;
        memset(nets[i].addr, 0, 16);
        memcpy(nets[i].addr, addr, alen);
        nets[i].prefix = prefix;
        (*n)++;
    }
    return 0;
}

/* None, or a tuple of bytes (the filters read them without the GIL, as bytes). */
static int bytes_tuple(PyObject *o, const char *what) {
    if (o == Py_None) return 0;
    if (PyTuple_Check(o)) {
        Py_ssize_t i = 0;
        while (i < PyTuple_GET_SIZE(o) && PyBytes_Check(PyTuple_GET_ITEM(o, i))) i++;
        if (i == PyTuple_GET_SIZE(o)) return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be None or a tuple of bytes", what);
    return -1;
}

static int agg_init(Aggregator *a, PyObject *args, PyObject *kw) {
    PyObject *fields, *states, *protos, *src, *dst;
    long port;
    if (!PyArg_ParseTuple(args, "O!OOlOO", &PyTuple_Type, &fields, &states, &protos, &port, &src, &dst)) return -1;
    if (bytes_tuple(states, "states") < 0 || bytes_tuple(protos, "protos") < 0) return -1;
    if (PyTuple_GET_SIZE(fields) > NFIELDS) { PyErr_SetString(PyExc_ValueError, "too many fields"); return -1; }
    if (claim(&a, 1) < 0) return -1;  /* __init__ again while another thread feeds it */
    int nf = (int)PyTuple_GET_SIZE(fields), fs[NFIELDS];
    for (int i = 0; i < nf; i++) {
        long f = PyLong_AsLong(PyTuple_GET_ITEM(fields, i));
        if (f < 0 || f >= NFIELDS) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad field");
            release(&a, 1);
            return -1;
        }
        fs[i] = (int)f;
    }
    int nsrc, ndst;
    struct net sn[64], dn[64];
    if (parse_nets(src, sn, &nsrc) < 0 || parse_nets(dst, dn, &ndst) < 0) { release(&a, 1); return -1; }
    /* all read: now the object changes (a second __init__ starts a new, empty table) */
    table_free(a);
    memcpy(a->fields, fs, sizeof(int) * (size_t)nf);
    a->nfields = nf;
    PyObject *old_s = a->states, *old_p = a->protos;
    a->states = states == Py_None ? NULL : Py_NewRef(states);
    a->protos = protos == Py_None ? NULL : Py_NewRef(protos);
    a->port = port;
    memcpy(a->src_nets, sn, sizeof(struct net) * (size_t)nsrc);
    memcpy(a->dst_nets, dn, sizeof(struct net) * (size_t)ndst);
    a->nsrc = nsrc; a->ndst = ndst;
    a->matched = a->total = a->binary_line = a->tick = 0;
    a->accounting = a->noise = 0;
    a->every = 1;
    release(&a, 1);
    Py_XDECREF(old_s);
    Py_XDECREF(old_p);
    return 0;
}

static void agg_dealloc(Aggregator *a) {
    table_free(a);
    Py_XDECREF(a->states);
    Py_XDECREF(a->protos);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *agg_get_matched(Aggregator *a, void *c) { return PyLong_FromLongLong(a->matched); }
static PyObject *agg_get_total(Aggregator *a, void *c) { return PyLong_FromLongLong(a->total); }
static PyObject *agg_get_accounting(Aggregator *a, void *c) { return PyBool_FromLong(a->accounting); }
static PyObject *agg_get_noise(Aggregator *a, void *c) { return PyBool_FromLong(a->noise); }
static PyObject *agg_get_binary_line(Aggregator *a, void *c) { return PyLong_FromLongLong(a->binary_line); }

static PyObject *agg_sample_every(Aggregator *a, PyObject *args) {
    long long n;
    if (!PyArg_ParseTuple(args, "L", &n)) return NULL;
    if (n < 1) { PyErr_SetString(PyExc_ValueError, "sample_every needs n >= 1"); return NULL; }
    if (claim(&a, 1) < 0) return NULL;
    a->every = n;
    a->tick = 0;
    release(&a, 1);
    Py_RETURN_NONE;
}

static PyMethodDef agg_methods[] = {
    {"sample_every", (PyCFunction)agg_sample_every, METH_VARARGS,
     "sample_every(n): count only the 1st, (n+1)-th, ... entry read from now on"},
    {"feed", (PyCFunction)agg_feed, METH_VARARGS, "feed(buf, skip_first_bad=False) -> (lines, bad, first bad line)"},
    {"feed_netlink", (PyCFunction)agg_feed_netlink, METH_VARARGS,
     "feed_netlink(buf) -> (entries, malformed messages, done)"},
    {"result", (PyCFunction)agg_result, METH_NOARGS, "{(key, label): [count, opk, ob, rpk, rb]}"},
    {"merge", (PyCFunction)agg_merge, METH_VARARGS, "merge(other, prefix=b'') adds other's counts, keys prefixed"},
    {"top", (PyCFunction)agg_top, METH_VARARGS, "top(limit) -> (groups, rows)"},
    {NULL}
};

static PyGetSetDef agg_getset[] = {
    {"matched", (getter)agg_get_matched, NULL, "entries that passed the filters", NULL},
    {"total", (getter)agg_get_total, NULL, "entries read", NULL},
    {"accounting", (getter)agg_get_accounting, NULL, "an entry had packets=/bytes= counters", NULL},
    {"noise", (getter)agg_get_noise, NULL, "an unreadable line was conntrack-tools' stderr", NULL},
    {"binary_line", (getter)agg_get_binary_line, NULL, "the last feed's first line with a NUL byte, or 0", NULL},
    {NULL}
};

/* tp_new: every field zero (an Aggregator used without __init__ has no key fields and no filters) */
static PyObject *agg_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Aggregator *a = (Aggregator *)PyType_GenericNew(type, args, kw);
    if (a) a->every = 1;
    return (PyObject *)a;
}

static PyTypeObject AggregatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctdoctor.listing._fastscan.Aggregator",
    .tp_basicsize = sizeof(Aggregator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = agg_new,
    .tp_init = (initproc)agg_init,
    .tp_dealloc = (destructor)agg_dealloc,
    .tp_methods = agg_methods,
    .tp_getset = agg_getset,
};

/* ---- module functions without a table ---------------------------------------------------------- */

/* netlink_done(buf) -> whether the buffer holds NLMSG_DONE (the end of a dump); an NLMSG_ERROR
   with an error raises OSError. */
static PyObject *netlink_done(PyObject *self, PyObject *args) {
    Py_buffer pb;
    int err;
    if (!PyArg_ParseTuple(args, "y*", &pb)) return NULL;
    int done = nl_scan_done(pb.buf, pb.len, &err);
    PyBuffer_Release(&pb);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyBool_FromLong(done);
}

/* drain_socket(fd, cap) -> (bytes, lost): every datagram waiting on a non-blocking netlink socket,
 * up to about cap bytes, in one call without the GIL. Conntrack events come one message per
 * datagram: one recv() each from Python costs more than the event. Each datagram is padded to
 * 4 bytes so the result parses as one netlink message stream. lost: ENOBUFS was reported. */
static PyObject *drain_socket(PyObject *self, PyObject *args) {
    int fd; Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "in", &fd, &cap)) return NULL;
    if (cap < 65536) cap = 65536;
    char *buf = malloc((size_t)cap);
    if (!buf) return PyErr_NoMemory();
    Py_ssize_t used = 0; int err = 0, lost = 0;
    Py_BEGIN_ALLOW_THREADS
    while (cap - used >= 65536) {
        ssize_t n = recv(fd, buf + used, (size_t)(cap - used), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOBUFS) { lost = 1; continue; }
            if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
            break;
        }
        if (n == 0) break;
        used += n;
        while (used & 3) buf[used++] = 0;
    }
    Py_END_ALLOW_THREADS
    if (err) { free(buf); errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *r = Py_BuildValue("(y#O)", buf, used, lost ? Py_True : Py_False);
    free(buf);
    return r;
}

/* read_full(fd, buffer) -> bytes read: read() until the buffer is full or the end, without the GIL.
 * /proc/net/nf_conntrack gives at most a page per read(): from Python each of those would take the
 * GIL back (and wait up to a switch interval for it while another thread runs Python). */
static PyObject *read_full(PyObject *self, PyObject *args) {
    int fd; Py_buffer pb;
    if (!PyArg_ParseTuple(args, "iw*", &fd, &pb)) return NULL;
    char *p = pb.buf; Py_ssize_t got = 0, len = pb.len; int err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (got < len) {
        ssize_t n = read(fd, p + got, (size_t)(len - got));
        if (n < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        if (n == 0) break;
        got += n;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&pb);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyLong_FromSsize_t(got);
}

/* ---- private entry points, for the tests ------------------------------------------------------- */

/* _hash_seed() -> this process's hash seed (tests: two processes differ, their output does not). */
static PyObject *hash_seed(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(fs_seed);
}

/* _set_busy(agg, flag): claim or release agg as a feeding thread would (tests: every entry point
   refuses a claimed table). Claiming a claimed one raises RuntimeError, as a second feeder gets. */
static PyObject *set_busy(PyObject *self, PyObject *args) {
    PyObject *ao;
    int flag;
    if (!PyArg_ParseTuple(args, "O!p", &AggregatorType, &ao, &flag)) return NULL;
    Aggregator *a = (Aggregator *)ao;
    if (flag && claim(&a, 1) < 0) return NULL;
    if (!flag) release(&a, 1);
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"feed_many", feed_many, METH_VARARGS, "feed_many((agg, ...), buf, skip_first_bad=False) -> (lines, bad, first)"},
    {"netlink_feed", netlink_feed, METH_VARARGS, "netlink_feed((agg, ...), buf) -> (entries, malformed, done)"},
    {"netlink_select", netlink_select, METH_VARARGS,
     "netlink_select(agg, buf, protect_established, seq, ack_every=1) -> (entries, matched, protected, malformed, "
     "done, delete requests)"},
    {"scan_fields", scan_fields, METH_VARARGS, "scan_fields(line, how) -> scan.S_* fields or None (tests)"},
    {"netlink_done", netlink_done, METH_VARARGS, "netlink_done(buf) -> whether it holds NLMSG_DONE"},
    {"read_full", read_full, METH_VARARGS, "read_full(fd, buffer) -> bytes read (until full or the end; no GIL)"},
    {"drain_socket", drain_socket, METH_VARARGS, "drain_socket(fd, cap) -> (datagrams padded to 4 bytes, enobufs)"},
    {"_hash_seed", hash_seed, METH_NOARGS, "_hash_seed() -> this process's hash seed (tests)"},
    {"_set_busy", set_busy, METH_VARARGS, "_set_busy(agg, flag): claim or release agg as a feeder does (tests)"},
    {NULL}
};

static struct PyModuleDef mod = { PyModuleDef_HEAD_INIT, "_fastscan", "conntrack listing aggregator", -1, mod_methods };

PyMODINIT_FUNC PyInit__fastscan(void) {
    fs_seed_init();
    if (PyType_Ready(&AggregatorType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Aggregator", (PyObject *)&AggregatorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
