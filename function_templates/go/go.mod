module example.com/word-count-go

go 1.19
