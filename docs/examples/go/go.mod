module example.org/mtls-go

go 1.19
