/*
 * table.c: the (key, label) records of an Aggregator, and the hash seed.
 *
 * Records sit dense in insertion order (so result() and top() never depend on the hash: the
 * output is the same whatever the seed); an open-addressing index of 32-bit record numbers with a
 * hash tag finds them. Nothing here touches Python objects: it runs without the GIL.
 */
#define _GNU_SOURCE  /* mremap */
#include "fastscan.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1 << 20)

uint64_t fs_seed;

/* A random seed per process: getrandom(), else /dev/urandom, else the clock and the pid (better
   than a constant an attacker can read in the source). Set once: a second module init (a
   sub-interpreter) must not change it under the tables that exist, whose records keep their hash.
   A forked child keeps it, so tables made before and after the fork still merge. */
int fs_seed_init(void) {
    static int seeded;
    if (seeded) return 0;
    seeded = 1;
    uint64_t s = 0;
    ssize_t n;
    do n = getrandom(&s, sizeof s, GRND_NONBLOCK); while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof s) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, &s, sizeof s) != (ssize_t)sizeof s) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            s = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48));
        }
        if (fd >= 0) close(fd);
    }
    fs_seed = s;
    return 0;
}

static char *arena_alloc(Aggregator *a, size_t n) {
    if (n > BLOCK / 4) {  /* a huge key: its own block */
        char **nb = realloc(a->blocks, (a->nblocks + 1) * sizeof(char *));
        if (!nb) return NULL;
        a->blocks = nb;
        char *p = malloc(n);
        if (!p) return NULL;
        /* keep the current block last */
        if (a->nblocks) { a->blocks[a->nblocks] = a->blocks[a->nblocks - 1]; a->blocks[a->nblocks - 1] = p; }
        else { a->blocks[0] = p; a->bused = a->bcap = 0; }
        a->nblocks++;
        return p;
    }
    if (!a->nblocks || a->bused + n > a->bcap) {
        char **nb = realloc(a->blocks, (a->nblocks + 1) * sizeof(char *));
        if (!nb) return NULL;
        a->blocks = nb;
        char *p = malloc(BLOCK);
        if (!p) return NULL;
        a->blocks[a->nblocks++] = p;
        a->bused = 0; a->bcap = BLOCK;
    }
    char *p = a->blocks[a->nblocks - 1] + a->bused;
    a->bused += n;
    return p;
}

static inline uint64_t tag_of(uint64_t h) { return h >> 32; }

/* The table's big arrays are anonymous mappings: they grow with mremap (no copy), start on a
   page (so 64-byte records stay on one cache line each), and ask for huge pages past 2 MiB
   (a table of 262,144 keys otherwise takes 5,000 page faults). */
static void *map_grow(void *old, size_t oldsize, size_t size) {
    void *p = old ? mremap(old, oldsize, size, MREMAP_MAYMOVE)
                  : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    if (size >= (2u << 20)) madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

static void map_free(void *p, size_t size) {
    if (p) munmap(p, size);
}

static int grow(Aggregator *a) {
    size_t ncap = a->cap ? a->cap * 2 : 8192;
    if (ncap > 0xFFFFFFFFULL) return -1;  /* record numbers are 32-bit */
    uint64_t *ni = map_grow(NULL, 0, ncap * sizeof(uint64_t));  /* zeroed */
    if (!ni) return -1;
    for (size_t i = 0; i < a->used; i++) {
        size_t j = a->slots[i].hash & (ncap - 1);
        while (ni[j]) j = (j + 1) & (ncap - 1);
        ni[j] = (tag_of(a->slots[i].hash) << 32) | (uint64_t)(i + 1);
    }
    map_free(a->index, a->cap * sizeof(uint64_t));
    a->index = ni;
    a->cap = ncap;
    return 0;
}

/* Room for more records: slots stay 64-byte aligned (one cache line each). */
static int more_records(Aggregator *a) {
    size_t nr = a->rcap ? a->rcap * 2 : 4096;
    slot *ns = map_grow(a->slots, a->rcap * sizeof(slot), nr * sizeof(slot));
    if (!ns) return -1;
    a->slots = ns;
    if (a->sums) {
        sums *nu = map_grow(a->sums, a->rcap * sizeof(sums), nr * sizeof(sums));
        if (!nu) {  /* keep the slots' new size consistent with the old sums: shrink back */
            slot *back = map_grow(a->slots, nr * sizeof(slot), a->rcap * sizeof(slot));
            if (back) a->slots = back;
            return -1;
        }
        a->sums = nu;
    }
    a->rcap = nr;
    return 0;
}

/* The sums array, made (zeroed) when the first counter that is not 0 comes: a listing without
   accounting never writes it. */
static int need_sums(Aggregator *a) {
    if (a->sums) return 0;
    a->sums = map_grow(NULL, 0, (a->rcap ? a->rcap : 1) * sizeof(sums));
    return a->sums ? 0 : -1;
}


/* Add counts under (key, label); kl is key then label, contiguous, h their hash (key_hash).
   0, or -1 on no memory. */
int add_counts(Aggregator *a, const char *kl, size_t klen, size_t llen, uint64_t h, long long cnt,
                      unsigned long long opk, unsigned long long ob, unsigned long long rpk, unsigned long long rb) {
    if ((a->used + 1) * 10 >= a->cap * 7 && grow(a) < 0) return -1;
    uint64_t tag = tag_of(h);
    size_t tl = klen + llen;
    size_t j = h & (a->cap - 1);
    uint64_t ix;
    while ((ix = a->index[j]) != 0) {
        if ((ix >> 32) == tag) {
            size_t r = (ix & 0xFFFFFFFFULL) - 1;
            slot *s = &a->slots[r];
            if (s->hash == h && s->klen == klen && s->llen == llen && memcmp(slot_key(s), kl, tl) == 0) {
                s->count += cnt;
                if (opk | ob | rpk | rb) {
                    if (need_sums(a) < 0) return -1;
                    sums *u = &a->sums[r];
                    u->opk = sat_add(u->opk, opk); u->ob = sat_add(u->ob, ob);
                    u->rpk = sat_add(u->rpk, rpk); u->rb = sat_add(u->rb, rb);
                }
                return 0;
            }
        }
        j = (j + 1) & (a->cap - 1);
    }
    if (a->used == a->rcap && more_records(a) < 0) return -1;
    slot *s = &a->slots[a->used];
    if (tl <= INLINE_KEY) memcpy(s->k.inl, kl, tl);
    else {
        s->k.ptr = arena_alloc(a, tl);
        if (!s->k.ptr) return -1;
        memcpy(s->k.ptr, kl, tl);
    }
    s->klen = (uint16_t)klen; s->llen = (uint8_t)llen; s->hash = h;
    s->count = cnt;
    if (opk | ob | rpk | rb) {
        if (need_sums(a) < 0) return -1;
    }
    if (a->sums) {
        sums *u = &a->sums[a->used];
        u->opk = opk; u->ob = ob; u->rpk = rpk; u->rb = rb;
    }
    a->used++;
    a->index[j] = (tag << 32) | (uint64_t)a->used;
    return 0;
}

/* Everything the table holds (the Aggregator itself is Python's to free). */
void table_free(Aggregator *a) {
    for (size_t i = 0; i < a->nblocks; i++) free(a->blocks[i]);
    free(a->blocks);
    map_free(a->slots, a->rcap * sizeof(slot));
    map_free(a->sums, (a->rcap ? a->rcap : 1) * sizeof(sums));
    map_free(a->index, a->cap * sizeof(uint64_t));
    a->blocks = NULL; a->slots = NULL; a->sums = NULL; a->index = NULL;
    a->nblocks = a->bused = a->bcap = a->rcap = a->used = a->cap = 0;
}
