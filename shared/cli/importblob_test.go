package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// import --blob streams an RDB from Blob storage (Azurite): by SAS URL, and by plain URL with the
// account key taken from AZURE_STORAGE_CONNECTION_STRING. The SAS signature is never printed.
func TestImportFromBlob(t *testing.T) {
	src := testenv.StartRedis(t)
	sc := src.Client(t, 0)
	n := fill(t, sc, 2000)
	if err := sc.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(src.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	client, err := azblob.NewClientFromConnectionString(az.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateContainer(ctx, "rdb-imports", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.UploadBuffer(ctx, "rdb-imports", "dump.rdb", data, nil); err != nil {
		t.Fatal(err)
	}
	blobURL := az.BlobEndpoint() + "/rdb-imports/dump.rdb"

	cred, err := azblob.NewSharedKeyCredential(testenv.DevStoreAccount, testenv.DevStoreKey)
	if err != nil {
		t.Fatal(err)
	}
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour),
		Permissions: (&sas.BlobPermissions{Read: true}).String(), ContainerName: "rdb-imports", BlobName: "dump.rdb"}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	sig := q.Signature()

	dst := testenv.StartRedis(t)
	code, sum, errs := runJSON(t, "import", "--blob", blobURL+"?"+q.Encode(), "--target", dst.URL())
	if code != 0 || sum.KeysCopied != int64(n) || sum.Verify == nil {
		t.Fatalf("SAS import: exit %d summary %+v", code, sum)
	}
	if strings.Contains(errs, sig) {
		t.Fatal("SAS signature printed")
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)

	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", az.ConnectionString)
	dst2 := testenv.StartRedis(t)
	code, sum, _ = runJSON(t, "import", "--blob", blobURL, "--target", dst2.URL())
	if code != 0 || sum.KeysCopied != int64(n) {
		t.Fatalf("connection-string import: exit %d summary %+v", code, sum)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst2.Client(t, 0)}, nil, 1)

	// A blob that does not exist: a clear error before anything is written.
	code, _, errs = run(t, "import", "--blob", az.BlobEndpoint()+"/rdb-imports/missing.rdb", "--target", dst2.URL())
	if code != ExitUsage || !strings.Contains(errs, "BlobNotFound") {
		t.Fatalf("missing blob: exit %d stderr %q", code, errs)
	}
	if strings.Contains(errs, testenv.DevStoreKey) {
		t.Fatal("account key printed")
	}
}
