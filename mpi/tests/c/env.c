/* The environment: Initialized / Finalized before, during and after;
 * Init_thread, Query_thread, Is_thread_main; Get_version (5.0) and
 * Abi_get_version (1.0); Abi_get_info; Get_library_version;
 * Get_processor_name; Wtime and Wtick; Alloc_mem / Free_mem; info objects
 * (create, set, get_string, get_nkeys, get_nthkey, dup, delete, free). */
#include <time.h>

#include "check.h"

static int rank, size;

static void check_flags(int want_init, int want_fin, const char *when) {
    int init = -1, fin = -1;
    CHECK(MPI_Initialized(&init) == MPI_SUCCESS, "MPI_Initialized %s", when);
    CHECK(MPI_Finalized(&fin) == MPI_SUCCESS, "MPI_Finalized %s", when);
    CHECK(init == want_init, "MPI_Initialized %s: %d, want %d", when, init,
          want_init);
    CHECK(fin == want_fin, "MPI_Finalized %s: %d, want %d", when, fin, want_fin);
}

static void test_versions(void) {
    int v = -1, sv = -1;
    MPI_OK(MPI_Get_version(&v, &sv));
    CHECK(v == 5 && sv == 0, "MPI_Get_version %d.%d, want 5.0", v, sv);
    CHECK(v == MPI_VERSION && sv == MPI_SUBVERSION, "mpi.h says %d.%d", MPI_VERSION,
          MPI_SUBVERSION);
    MPI_OK(MPI_Abi_get_version(&v, &sv));
    CHECK(v == 1 && sv == 0, "MPI_Abi_get_version %d.%d, want 1.0", v, sv);
    CHECK(v == MPI_ABI_VERSION && sv == MPI_ABI_SUBVERSION, "mpi.h's ABI is %d.%d",
          MPI_ABI_VERSION, MPI_ABI_SUBVERSION);

    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = -1;
    MPI_OK(MPI_Get_library_version(lib, &len));
    CHECK(len > 0 && len == (int)strlen(lib), "library version length %d", len);
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_OK(MPI_Get_processor_name(host, &len));
    CHECK(len > 0 && len == (int)strlen(host), "processor name '%s' length %d", host,
          len);

    /* The ABI's sizes. */
    MPI_Info info = MPI_INFO_NULL;
    MPI_OK(MPI_Abi_get_info(&info));
    CHECK(info != MPI_INFO_NULL, "MPI_Abi_get_info gave MPI_INFO_NULL");
    const char *keys[] = {"mpi_aint_size", "mpi_count_size", "mpi_offset_size"};
    const int sizes[] = {(int)sizeof(MPI_Aint), (int)sizeof(MPI_Count),
                         (int)sizeof(MPI_Offset)};
    for (int i = 0; i < 3; i++) {
        char val[MPI_MAX_INFO_VAL], want[16];
        int buflen = MPI_MAX_INFO_VAL, flag = 0;
        MPI_OK(MPI_Info_get_string(info, keys[i], &buflen, val, &flag));
        snprintf(want, sizeof want, "%d", sizes[i]);
        CHECK(flag && strcmp(val, want) == 0, "%s: flag %d value '%s', want '%s'",
              keys[i], flag, flag ? val : "", want);
    }
    MPI_OK(MPI_Info_free(&info));
    CHECK(info == MPI_INFO_NULL, "Info_free left the handle");
}

static void test_threads(int provided) {
    int q = -1, main_ = -1;
    MPI_OK(MPI_Query_thread(&q));
    CHECK(q == provided, "Query_thread %d, Init_thread provided %d", q, provided);
    MPI_OK(MPI_Is_thread_main(&main_));
    CHECK(main_ == 1, "Is_thread_main %d", main_);
}

static double now(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_time(void) {
    double tick = MPI_Wtick();
    CHECK(tick > 0 && tick <= 1, "MPI_Wtick %g", tick);
    double t0 = MPI_Wtime(), c0 = now(), t = t0, prev = t0;
    long spins = 0;
    /* Wtime never goes back and advances: spin for 50 ms of C time. */
    while (now() - c0 < 0.05 && spins < 100000000L) {
        t = MPI_Wtime();
        CHECK(t >= prev, "MPI_Wtime went back: %.9f after %.9f", t, prev);
        prev = t;
        spins++;
    }
    double c = now() - c0, w = MPI_Wtime() - t0;
    CHECK(w > 0, "MPI_Wtime did not advance in %ld calls", spins);
    /* In seconds: within a factor of 2 of C's clock over the same span. */
    CHECK(w > c / 2 && w < c * 2, "MPI_Wtime measured %.4f s, C %.4f s", w, c);
}

static void test_alloc_mem(void) {
    int n = 1 << 18;
    int *a = NULL, *b = NULL;
    MPI_OK(MPI_Alloc_mem((MPI_Aint)(sizeof *a * (size_t)n), MPI_INFO_NULL, &a));
    MPI_OK(MPI_Alloc_mem((MPI_Aint)(sizeof *b * (size_t)n), MPI_INFO_NULL, &b));
    CHECK(a != NULL && b != NULL && a != b, "Alloc_mem gave %p and %p", (void *)a,
          (void *)b);
    for (int i = 0; i < n; i++) {
        a[i] = rank * 7 + i;
        b[i] = -1;
    }
    /* As message buffers. */
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    MPI_OK(MPI_Sendrecv(a, n, MPI_INT, right, 0, b, n, MPI_INT, left, 0,
                        MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    for (int i = 0; i < n; i++)
        CHECK(b[i] == left * 7 + i, "Alloc_mem buffer [%d] = %d", i, b[i]);
    MPI_OK(MPI_Free_mem(a));
    MPI_OK(MPI_Free_mem(b));
    char *tiny = NULL;
    MPI_OK(MPI_Alloc_mem(1, MPI_INFO_NULL, &tiny));
    tiny[0] = 'x';
    MPI_OK(MPI_Free_mem(tiny));
}

static void get(MPI_Info info, const char *key, const char *want) {
    char val[MPI_MAX_INFO_VAL];
    int buflen = MPI_MAX_INFO_VAL, flag = -1;
    MPI_OK(MPI_Info_get_string(info, key, &buflen, val, &flag));
    if (want == NULL) {
        CHECK(flag == 0, "key %s: present", key);
        return;
    }
    CHECK(flag == 1 && strcmp(val, want) == 0, "key %s: flag %d value '%s', want '%s'",
          key, flag, flag == 1 ? val : "", want);
    CHECK(buflen == (int)strlen(want) + 1, "key %s: buflen %d", key, buflen);
}

static void test_info(void) {
    MPI_Info info, copy;
    int n = -1;
    MPI_OK(MPI_Info_create(&info));
    MPI_OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 0, "a new info has %d keys", n);
    MPI_OK(MPI_Info_set(info, "bb", "two"));
    MPI_OK(MPI_Info_set(info, "a", "1"));
    MPI_OK(MPI_Info_set(info, "c", "a longer value"));
    MPI_OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 3, "nkeys %d", n);
    get(info, "a", "1");
    get(info, "bb", "two");
    get(info, "c", "a longer value");
    get(info, "d", NULL);
    MPI_OK(MPI_Info_set(info, "a", "uno"));
    MPI_OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 3, "nkeys after overwriting %d", n);
    get(info, "a", "uno");

    /* A short buffer: the value cut, buflen the whole length + 1. */
    char val[8] = "xxxxxxx";
    int buflen = 3, flag = 0;
    MPI_OK(MPI_Info_get_string(info, "c", &buflen, val, &flag));
    CHECK(flag == 1 && buflen == 15, "short buffer: flag %d buflen %d", flag, buflen);
    CHECK(strcmp(val, "a ") == 0, "short buffer: value '%s', want 'a '", val);
    buflen = 0;
    MPI_OK(MPI_Info_get_string(info, "bb", &buflen, val, &flag));
    CHECK(flag == 1 && buflen == 4, "length query: flag %d buflen %d", flag, buflen);

    /* Every key, once. */
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        char key[MPI_MAX_INFO_KEY];
        MPI_OK(MPI_Info_get_nthkey(info, i, key));
        int bit = strcmp(key, "a") == 0 ? 1 : strcmp(key, "bb") == 0 ? 2
                : strcmp(key, "c") == 0 ? 4 : 8;
        CHECK(!(seen & bit) && bit != 8, "key %d is '%s'", i, key);
        seen |= bit;
    }

    MPI_OK(MPI_Info_dup(info, &copy));
    MPI_OK(MPI_Info_set(copy, "d", "in the copy"));
    MPI_OK(MPI_Info_delete(copy, "a"));
    get(copy, "d", "in the copy");
    get(copy, "a", NULL);
    get(copy, "bb", "two");
    get(info, "a", "uno");
    get(info, "d", NULL);
    MPI_OK(MPI_Info_delete(info, "bb"));
    MPI_OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 2, "nkeys after delete %d", n);
    get(info, "bb", NULL);

    /* Errors, returned. */
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    int rc = MPI_Info_delete(info, "bb");
    CHECK(check_class(rc) == MPI_ERR_INFO_NOKEY, "delete of a missing key: class %d",
          check_class(rc));
    char longkey[MPI_MAX_INFO_KEY + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    rc = MPI_Info_set(info, longkey, "v");
    CHECK(check_class(rc) == MPI_ERR_INFO_KEY, "a key too long: class %d",
          check_class(rc));
    static char longval[MPI_MAX_INFO_VAL + 2];
    memset(longval, 'v', sizeof longval - 1);
    rc = MPI_Info_set(info, "k", longval);
    CHECK(check_class(rc) == MPI_ERR_INFO_VALUE, "a value too long: class %d",
          check_class(rc));
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_ARE_FATAL));

    MPI_OK(MPI_Info_free(&copy));
    MPI_OK(MPI_Info_free(&info));
    CHECK(info == MPI_INFO_NULL && copy == MPI_INFO_NULL, "Info_free left a handle");
}

int main(int argc, char **argv) {
    int provided = -1;
    check_flags(0, 0, "before MPI_Init_thread");
    CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) ==
              MPI_SUCCESS,
          "MPI_Init_thread failed");
    CHECK(provided == MPI_THREAD_SINGLE || provided == MPI_THREAD_FUNNELED ||
              provided == MPI_THREAD_SERIALIZED || provided == MPI_THREAD_MULTIPLE,
          "provided %d is no thread level", provided);
    CHECK(provided <= MPI_THREAD_MULTIPLE, "provided %d above the required %d",
          provided, MPI_THREAD_MULTIPLE);
    check_flags(1, 0, "after MPI_Init_thread");
    check_min_ranks("env");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_versions();
    test_threads(provided);
    test_time();
    test_alloc_mem();
    test_info();
    int failed = 0;
    MPI_OK(MPI_Allreduce(&check_failures, &failed, 1, MPI_INT, MPI_SUM,
                         MPI_COMM_WORLD));
    MPI_OK(MPI_Finalize());
    check_flags(1, 1, "after MPI_Finalize");
    /* No MPI call may follow MPI_Finalize but these, and version queries. */
    int v = -1, sv = -1;
    CHECK(MPI_Get_version(&v, &sv) == MPI_SUCCESS && v == 5,
          "MPI_Get_version after MPI_Finalize");
    if (failed != 0 || check_failures != 0) {
        fprintf(stderr, "FAILED env %d ranks\n", size);
        return 1;
    }
    if (rank == 0)
        printf("OK env %d ranks\n", size);
    return 0;
}
